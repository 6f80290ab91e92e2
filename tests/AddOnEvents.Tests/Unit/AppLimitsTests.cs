using AddOnEvents.Ingress.Apps;

namespace AddOnEvents.Tests.Unit;

public sealed class AppLimitsTests
{
    [Fact]
    public void StricterTakesEachLowerLimit()
    {
        var limits = AppLimits.Stricter(
            new AppLimits { TokensPerDay = 100, MaxOutputTokens = 500 },
            new AppLimits { TokensPerDay = 1_000, MaxOutputTokens = 50, RequestsPerMinute = 10 });

        Assert.Equal(100, limits.TokensPerDay);
        Assert.Equal(50, limits.MaxOutputTokens);
        Assert.Equal(10, limits.RequestsPerMinute);
        Assert.Null(limits.TokensPerMonth);
    }

    [Fact]
    public void StricterAllowsModelsBothAllow()
    {
        var none = AppLimits.Stricter(new AppLimits { AllowedModels = ["gpt-4o"] }, new AppLimits { AllowedModels = ["o1"] });
        var common = AppLimits.Stricter(new AppLimits { AllowedModels = ["gpt-4o", "o1"] }, new AppLimits { AllowedModels = ["o1", "o3"] });

        Assert.Empty(none.AllowedModels!);
        Assert.Equal(["o1"], common.AllowedModels!);
    }

    [Fact]
    public void StoredEmptyModelListAllowsEveryModel()
    {
        var operatorOnly = AppLimits.Stricter(new AppLimits { AllowedModels = [] }, null);
        var withDeveloper = AppLimits.Stricter(new AppLimits { AllowedModels = [] }, new AppLimits { AllowedModels = ["gpt-4o"] });

        Assert.Null(operatorOnly.AllowedModels);
        Assert.Equal(["gpt-4o"], withDeveloper.AllowedModels!);
    }
}
