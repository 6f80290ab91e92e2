using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using AddOnEvents.Common.Net;
using MassTransit;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Common.Messaging;

/// <summary>Applies RabbitMq:UseTls and its certificate settings to the MassTransit RabbitMQ host.</summary>
internal static partial class BrokerTls
{
    public static void Configure(IRabbitMqHostConfigurator host, RabbitMqOptions options, ILogger logger)
    {
        if (!options.UseTls)
        {
            if (!Loopback.IsLoopbackHost(options.Host))
            {
                LogPlainConnection(logger, options.Host);
            }

            return;
        }

        var trustedCa = string.IsNullOrWhiteSpace(options.CaCertificatePath)
            ? null
            : ServerCertificates.LoadCa(options.CaCertificatePath, "RabbitMq:CaCertificatePath");
        var clientCertificate = LoadClientCertificate(options);
        string serverName = string.IsNullOrWhiteSpace(options.ServerName) ? options.Host : options.ServerName;
        if (options.AllowInvalidCertificates)
        {
            LogVerificationOff(logger, options.Host);
        }

        host.UseSsl(ssl =>
        {
            ssl.Protocol = SslProtocols.Tls12 | SslProtocols.Tls13;
            ssl.ServerName = serverName;
            if (clientCertificate is not null)
            {
                ssl.Certificate = clientCertificate;
            }

            // Accepting any certificate is the purpose of AllowInvalidCertificates, which RabbitMqTlsValidator allows in Development only.
#pragma warning disable CA5359
            ssl.CertificateValidationCallback = options.AllowInvalidCertificates
                ? AcceptAnyCertificate
                : ServerCertificates.CreateValidator($"RabbitMQ at {options.Host}:{options.Port}", trustedCa, "RabbitMq:CaCertificatePath");
#pragma warning restore CA5359
        });
    }

    private static bool AcceptAnyCertificate(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors) => true;

    private static X509Certificate2? LoadClientCertificate(RabbitMqOptions options)
    {
        if (string.IsNullOrWhiteSpace(options.ClientCertificatePath))
        {
            return null;
        }

        try
        {
            return string.IsNullOrWhiteSpace(options.ClientKeyPath)
                ? X509CertificateLoader.LoadPkcs12FromFile(options.ClientCertificatePath, options.ClientCertificatePassword)
                : X509Certificate2.CreateFromPemFile(options.ClientCertificatePath, options.ClientKeyPath);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException(
                $"RabbitMq:ClientCertificatePath '{options.ClientCertificatePath}' could not be loaded with its key: {ex.Message}", ex);
        }
    }

    [LoggerMessage(EventId = 4001, Level = LogLevel.Warning,
        Message = "RabbitMq:AllowInvalidCertificates is on: the certificate of the broker at {Host} is not verified. Use it only in Development")]
    private static partial void LogVerificationOff(ILogger logger, string host);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Warning,
        Message = "RabbitMq:UseTls is off: credentials and messages cross the network to {Host} unencrypted")]
    private static partial void LogPlainConnection(ILogger logger, string host);
}

/// <summary>
/// Checks the TLS settings of <see cref="RabbitMqOptions"/> at start: files that must exist, and certificate checks
/// turned off outside Development. Without a host environment, the environment counts as not Development.
/// </summary>
internal sealed class RabbitMqTlsValidator(IHostEnvironment? environment = null) : IValidateOptions<RabbitMqOptions>
{
    public ValidateOptionsResult Validate(string? name, RabbitMqOptions options)
    {
        var failures = new List<string>();
        if (options.AllowInvalidCertificates && environment?.IsDevelopment() != true)
        {
            failures.Add("RabbitMq:AllowInvalidCertificates is true, which is allowed only in the Development environment, not in "
                + $"{environment?.EnvironmentName ?? "a service without a host environment"}: remove it and set RabbitMq:CaCertificatePath "
                + "to the CA that signed the broker's certificate.");
        }

        bool tlsSettingsPresent = options.AllowInvalidCertificates
            || !string.IsNullOrWhiteSpace(options.CaCertificatePath)
            || !string.IsNullOrWhiteSpace(options.ClientCertificatePath);
        if (!options.UseTls && tlsSettingsPresent)
        {
            failures.Add("RabbitMq:UseTls is false, but TLS certificate settings are present: set RabbitMq:UseTls to true "
                + "(and RabbitMq:Port to the broker's TLS port, usually 5671) or remove them.");
        }

        RequireFile(failures, "RabbitMq:CaCertificatePath", options.CaCertificatePath);
        RequireFile(failures, "RabbitMq:ClientCertificatePath", options.ClientCertificatePath);
        RequireFile(failures, "RabbitMq:ClientKeyPath", options.ClientKeyPath);
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    private static void RequireFile(List<string> failures, string setting, string? path)
    {
        if (!string.IsNullOrWhiteSpace(path) && !File.Exists(path))
        {
            failures.Add($"{setting} '{path}' was not found.");
        }
    }
}
