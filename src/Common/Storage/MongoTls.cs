using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using AddOnEvents.Common.Net;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MongoDB.Driver;
using MongoDB.Driver.Core.Configuration;

namespace AddOnEvents.Common.Storage;

/// <summary>
/// TLS options of <c>Mongo:ConnectionString</c>. The .NET driver reads <c>tls</c> and <c>tlsInsecure</c> itself but
/// ignores <c>tlsCAFile</c>, <c>tlsCertificateKeyFile</c>, <c>tlsCertificateKeyFilePassword</c>,
/// <c>tlsAllowInvalidCertificates</c> and <c>tlsAllowInvalidHostnames</c>, which other MongoDB drivers and mongosh
/// accept, so they are applied here.
/// </summary>
public static partial class MongoTls
{
    private const string CaSetting = "tlsCAFile in Mongo:ConnectionString";

    /// <summary>Options that turn certificate checks off, each with the value that does so.</summary>
    private static readonly (string Name, string Value)[] InsecureOptions =
    [
        ("tlsInsecure", "true"),
        ("tlsAllowInvalidCertificates", "true"),
        ("tlsAllowInvalidHostnames", "true"),
        ("sslVerifyCertificate", "false"),
    ];

    /// <summary>
    /// Builds the client settings from a connection string: the driver's own reading, plus a check of the server's
    /// certificate against <c>tlsCAFile</c> (or the machine's trust store) and the client certificate from
    /// <c>tlsCertificateKeyFile</c>, a PEM file with the certificate and its private key.
    /// </summary>
    public static MongoClientSettings CreateSettings(string connectionString, ILogger logger)
    {
        var settings = MongoClientSettings.FromConnectionString(connectionString);
        if (!settings.UseTls)
        {
            return settings;
        }

        var parsed = new ConnectionString(connectionString);
        string? insecure = FindInsecureOption(parsed);
        if (insecure is not null)
        {
            // Validation allows this in Development only. The driver alone would ignore every one of these options except tlsInsecure.
            LogVerificationOff(logger, insecure);
            settings.AllowInsecureTls = true;
            return settings;
        }

        var ssl = settings.SslSettings?.Clone() ?? new SslSettings();
        ssl.EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13;
        var trustedCa = parsed.GetOption("tlsCAFile") is { Length: > 0 } caFile ? ServerCertificates.LoadCa(caFile, CaSetting) : null;
        ssl.ServerCertificateValidationCallback = ServerCertificates.CreateValidator("MongoDB", trustedCa, CaSetting);
        if (parsed.GetOption("tlsCertificateKeyFile") is { Length: > 0 } keyFile)
        {
            ssl.ClientCertificates = [LoadClientCertificate(keyFile, parsed.GetOption("tlsCertificateKeyFilePassword"))];
        }

        settings.SslSettings = ssl;
        return settings;
    }

    /// <summary>Returns the first option, as name=value, that turns certificate checks off, or null.</summary>
    internal static string? FindInsecureOption(ConnectionString parsed) =>
        InsecureOptions
            .Where(option => string.Equals(parsed.GetOption(option.Name), option.Value, StringComparison.OrdinalIgnoreCase))
            .Select(option => $"{option.Name}={option.Value}")
            .FirstOrDefault();

    private static X509Certificate2 LoadClientCertificate(string path, string? password)
    {
        try
        {
            return string.IsNullOrEmpty(password)
                ? X509Certificate2.CreateFromPemFile(path)
                : X509Certificate2.CreateFromEncryptedPemFile(path, password);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException(
                $"tlsCertificateKeyFile '{path}' in Mongo:ConnectionString could not be loaded as a PEM certificate with its private key: {ex.Message}",
                ex);
        }
    }

    [LoggerMessage(EventId = 4101, Level = LogLevel.Warning,
        Message = "Mongo:ConnectionString has {Option}: the database's certificate is not verified. Use it only in Development")]
    private static partial void LogVerificationOff(ILogger logger, string option);
}

/// <summary>
/// Rejects at start a connection string that turns certificate checks off outside Development, names TLS files
/// without turning TLS on, or names files that do not exist. Without a host environment, as in a bare service
/// collection, the environment counts as not Development.
/// </summary>
internal sealed class MongoTlsValidator(IHostEnvironment? environment = null) : IValidateOptions<MongoOptions>
{
    private static readonly string[] FileOptions = ["tlsCAFile", "tlsCertificateKeyFile"];

    public ValidateOptionsResult Validate(string? name, MongoOptions options)
    {
        if (string.IsNullOrWhiteSpace(options.ConnectionString))
        {
            return ValidateOptionsResult.Skip;
        }

        ConnectionString parsed;
        try
        {
            parsed = new ConnectionString(options.ConnectionString);
        }
        catch (MongoConfigurationException)
        {
            // The driver's message can quote the string, and with it the password.
            return ValidateOptionsResult.Fail("Mongo:ConnectionString is not a valid mongodb:// or mongodb+srv:// connection string.");
        }

        var failures = new List<string>();
        if (MongoTls.FindInsecureOption(parsed) is { } insecure && environment?.IsDevelopment() != true)
        {
            failures.Add($"Mongo:ConnectionString has {insecure}, which turns certificate checks off and is allowed only in the Development "
                + $"environment, not in {environment?.EnvironmentName ?? "a service without a host environment"}: remove it and set tlsCAFile "
                + "to the CA that signed the database's certificate.");
        }

        bool tls = parsed.Tls ?? parsed.Scheme == ConnectionStringScheme.MongoDBPlusSrv;
        foreach (string option in FileOptions)
        {
            if (parsed.GetOption(option) is not { Length: > 0 } path)
            {
                continue;
            }

            if (!tls)
            {
                failures.Add($"Mongo:ConnectionString has {option} but TLS is off: add tls=true or remove {option}.");
            }
            else if (!File.Exists(path))
            {
                failures.Add($"{option} '{path}' in Mongo:ConnectionString was not found.");
            }
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
