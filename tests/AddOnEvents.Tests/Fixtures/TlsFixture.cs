using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using AddOnEvents.Common.Net;
using MongoDB.Driver;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>
/// The throwaway CA and certificates that test.sh created with scripts/tls-certs.sh, and the RabbitMQ node it
/// started with a TLS listener only.
/// </summary>
public static class TlsEnvironment
{
    private static readonly Lazy<X509Certificate2> TestCa = new(() => X509CertificateLoader.LoadCertificateFromFile(PathOf("ca.crt")));

    public static string CertificateDirectory => Require("ADDONEVENTS_TEST_TLS_DIR");

    public static int RabbitMqTlsPort => int.Parse(Require("ADDONEVENTS_TEST_RABBITMQ_TLS_PORT"), CultureInfo.InvariantCulture);

    public static int RabbitMqTlsManagementPort =>
        int.Parse(Require("ADDONEVENTS_TEST_RABBITMQ_TLS_MGMT_PORT"), CultureInfo.InvariantCulture);

    /// <summary>Returns the path of one file made by scripts/tls-certs.sh, such as ca.crt or client.p12.</summary>
    public static string PathOf(string file) => Path.Combine(CertificateDirectory, file);

    /// <summary>Checks a server certificate the way a client that trusts only the test CA would.</summary>
    public static bool TrustTestCa(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors) =>
        ServerCertificates.FindProblem(certificate, chain, errors, TestCa.Value, "localhost", "the test CA") is null;

    private static string Require(string name) =>
        Environment.GetEnvironmentVariable(name)
        ?? throw new InvalidOperationException($"{name} is not set: run the tests through ./test.sh, which creates the test CA and starts RabbitMQ over TLS.");
}

/// <summary>
/// The whole system with TLS on every hop that this machine can encrypt. Clients reach Ingress over HTTPS and wss.
/// The services reach RabbitMQ over AMQPS with a client certificate, and MongoDB through a TLS proxy in front of
/// jongodb, which has no TLS of its own. Every client trusts only the throwaway test CA. The fake upstream stays on
/// plain HTTP, which is allowed for a loopback address.
/// </summary>
public sealed class TlsFixture : SystemFixture
{
    public TcpProxy MongoTlsProxy { get; private set; } = null!;

    protected override string ServiceMongoUri => MongoUri("ca.crt");

    /// <summary>Connection string of the TLS proxy to jongodb that trusts the CA in <paramref name="caFile"/>.</summary>
    public string MongoUri(string caFile) =>
        $"mongodb://localhost:{MongoTlsProxy.Port}/?tls=true&tlsCAFile={Uri.EscapeDataString(TlsEnvironment.PathOf(caFile))}"
        + $"&tlsCertificateKeyFile={Uri.EscapeDataString(TlsEnvironment.PathOf("client.pem"))}";

    public override async Task InitializeAsync()
    {
        var jongodb = new MongoUrl(TestEnvironment.MongoUri).Server;
        var certificate = X509Certificate2.CreateFromPemFile(TlsEnvironment.PathOf("server.crt"), TlsEnvironment.PathOf("server.key"));
        MongoTlsProxy = new TcpProxy(new IPEndPoint(IPAddress.Loopback, jongodb.Port), certificate);
        MongoTlsProxy.Restore();
        Http.ServerCertificateValidation = TlsEnvironment.TrustTestCa;
        await base.InitializeAsync();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await MongoTlsProxy.DisposeAsync();
    }

    public override Dictionary<string, string?> CommonSettings() => new(base.CommonSettings())
    {
        ["RabbitMq:Port"] = TlsEnvironment.RabbitMqTlsPort.ToString(CultureInfo.InvariantCulture),
        // Only the tests of TlsTests use this node, one at a time, so the default virtual host is theirs alone.
        ["RabbitMq:VirtualHost"] = "/",
        ["RabbitMq:UseTls"] = "true",
        ["RabbitMq:ServerName"] = "localhost",
        ["RabbitMq:CaCertificatePath"] = TlsEnvironment.PathOf("ca.crt"),
        ["RabbitMq:ClientCertificatePath"] = TlsEnvironment.PathOf("client.p12"),
        ["RabbitMq:ClientCertificatePassword"] = File.ReadAllText(TlsEnvironment.PathOf("client.p12.password")).Trim(),
    };

    public override Dictionary<string, string?> IngressSettings() => new(base.IngressSettings())
    {
        ["Ingress:RequireHttps"] = "true",
        ["Kestrel:Endpoints:Https:Url"] = "https://127.0.0.1:0",
        ["Kestrel:Certificates:Default:Path"] = TlsEnvironment.PathOf("server.crt"),
        ["Kestrel:Certificates:Default:KeyPath"] = TlsEnvironment.PathOf("server.key"),
    };
}
