using System.Security.Cryptography;
using AddOnEvents.Common.Crypto;
using AddOnEvents.Contracts;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Crypto;

/// <summary>KeyWorker's public sealing key; Ingress can seal keys with it but never open them.</summary>
public sealed class SealingPublicKey(IOptions<SealingOptions> options) : IDisposable
{
    private readonly ECDiffieHellman _key = SealingKeys.Load(options.Value, privateKey: false);
    private readonly string _keyId = options.Value.KeyId!;

    public SealedSecret Seal(ProviderKey key, string context) => SecretSealing.Seal(key.AsSpan(), _key, _keyId, context);

    public void Dispose() => _key.Dispose();
}
