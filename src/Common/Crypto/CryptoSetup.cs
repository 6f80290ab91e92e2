using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Common.Crypto;

public static class CryptoSetup
{
    /// <summary>Registers the local master key provider and the envelope cipher; the options are checked at start.</summary>
    public static IServiceCollection AddEnvelopeEncryption(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<MasterKeyOptions>()
            .Bind(configuration.GetSection(MasterKeyOptions.SectionName))
            .ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<MasterKeyOptions>, MasterKeyOptionsValidator>());
        services.TryAddSingleton<LocalMasterKeyProvider>();
        services.TryAddSingleton<IMasterKeyProvider>(sp => sp.GetRequiredService<LocalMasterKeyProvider>());
        services.TryAddSingleton<EnvelopeCipher>();
        return services;
    }

    /// <summary>Registers the sealing options; KeyWorker needs the private key, Ingress the public key only.</summary>
    public static IServiceCollection AddSealingKey(this IServiceCollection services, IConfiguration configuration, bool privateKey)
    {
        services.AddOptions<SealingOptions>()
            .Bind(configuration.GetSection(SealingOptions.SectionName))
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<SealingOptions>>(new SealingOptionsValidator(privateKey));
        return services;
    }
}
