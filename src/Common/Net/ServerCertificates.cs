using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace AddOnEvents.Common.Net;

/// <summary>Verifies the TLS certificates of the broker and the database against a CA that the operator configured.</summary>
public static class ServerCertificates
{
    private const string ServerAuthenticationOid = "1.3.6.1.5.5.7.3.1";

    /// <summary>Loads a CA certificate from a PEM or DER file. A failure names <paramref name="setting"/>.</summary>
    public static X509Certificate2 LoadCa(string path, string setting)
    {
        try
        {
            return X509CertificateLoader.LoadCertificateFromFile(path);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException($"{setting} '{path}' could not be read as a PEM or DER certificate: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// Creates a validation callback that accepts a certificate only when it is issued for the host name connected to
    /// and chains to <paramref name="trustedCa"/> (or, without one, to the machine's trust store). A rejected certificate
    /// throws an <see cref="AuthenticationException"/> that names the problem, so the start-up or connection error tells
    /// the operator what to fix rather than only reporting that a callback rejected the certificate.
    /// </summary>
    public static RemoteCertificateValidationCallback CreateValidator(string peer, X509Certificate2? trustedCa, string caSetting) =>
        (sender, certificate, chain, errors) =>
        {
            string hostName = (sender as SslStream)?.TargetHostName ?? "";
            string? problem = FindProblem(certificate, chain, errors, trustedCa, hostName, caSetting);
            return problem is null
                ? true
                : throw new AuthenticationException($"The TLS connection to {peer} failed certificate verification: {problem}.");
        };

    /// <summary>
    /// Returns why a server certificate is not acceptable, or null when it is. With a CA, only that CA is trusted, and
    /// intermediates that the server sent are used to reach it.
    /// </summary>
    public static string? FindProblem(
        X509Certificate? certificate, X509Chain? presented, SslPolicyErrors errors, X509Certificate2? trustedCa, string hostName, string caSetting)
    {
        if (certificate is not X509Certificate2 leaf || errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable))
        {
            return "the server presented no certificate";
        }

        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch))
        {
            return $"the certificate '{leaf.Subject}' is not issued for the host name '{hostName}'; "
                + "connect with a name from its subject alternative names";
        }

        if (trustedCa is null)
        {
            return errors == SslPolicyErrors.None
                ? null
                : $"the certificate '{leaf.Subject}' issued by '{leaf.Issuer}' is not trusted by this machine: "
                    + $"{Describe(presented?.ChainStatus)}; set {caSetting} to the CA that signed it";
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(trustedCa);
        // NOTE: revocation is not checked, because a private CA for internal servers rarely publishes a CRL or OCSP responder.
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        chain.ChainPolicy.ApplicationPolicy.Add(new Oid(ServerAuthenticationOid));
        if (presented is not null)
        {
            foreach (var element in presented.ChainElements.Skip(1))
            {
                chain.ChainPolicy.ExtraStore.Add(element.Certificate);
            }
        }

        return chain.Build(leaf)
            ? null
            : $"the certificate '{leaf.Subject}' issued by '{leaf.Issuer}' does not chain to the CA in {caSetting} "
                + $"('{trustedCa.Subject}'): {Describe(chain.ChainStatus)}";
    }

    private static string Describe(X509ChainStatus[]? statuses) =>
        statuses is { Length: > 0 }
            ? string.Join("; ", statuses.Select(s => $"{s.Status} ({s.StatusInformation.Trim()})"))
            : "no chain status";
}
