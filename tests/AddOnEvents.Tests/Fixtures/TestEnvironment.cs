using System.Security.Cryptography;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>
/// The broker and database that test.sh started for this run, and throwaway secrets for the services.
/// </summary>
public static class TestEnvironment
{
    public static int RabbitMqPort => int.Parse(Require("ADDONEVENTS_TEST_RABBITMQ_PORT"), System.Globalization.CultureInfo.InvariantCulture);

    public static int RabbitMqManagementPort =>
        int.Parse(Require("ADDONEVENTS_TEST_RABBITMQ_MGMT_PORT"), System.Globalization.CultureInfo.InvariantCulture);

    public static string MongoUri => Require("ADDONEVENTS_TEST_MONGO_URI");

    private static string Require(string name) =>
        Environment.GetEnvironmentVariable(name)
        ?? throw new InvalidOperationException($"{name} is not set: run the tests through ./test.sh, which starts RabbitMQ and jongodb.");
}

/// <summary>One set of secrets, split the way the deployment splits them between the services.</summary>
public sealed class TestSecrets
{
    public TestSecrets()
    {
        using var sealing = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        SealingPrivateKey = Convert.ToBase64String(sealing.ExportPkcs8PrivateKey());
        SealingPublicKey = Convert.ToBase64String(sealing.ExportSubjectPublicKeyInfo());
    }

    public string SealingKeyId { get; } = "seal-test";

    public string SealingPrivateKey { get; }

    public string SealingPublicKey { get; }

    public string MasterKey1 { get; } = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    public string MasterKey2 { get; } = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    public string FingerprintKey { get; } = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    public string AdminToken { get; } = Convert.ToHexString(RandomNumberGenerator.GetBytes(32));

    public string TokenSigningKey { get; } = Convert.ToBase64String(RandomNumberGenerator.GetBytes(48));
}
