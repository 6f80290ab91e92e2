using AddOnEvents.Ingress.Endpoints;

namespace AddOnEvents.Tests.Unit;

public sealed class KeyFormatTests
{
    [Theory]
    [InlineData("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789")]
    [InlineData("  sk-abcdefghijklmnopqrstuvwxyz0123  ")]
    [InlineData("\tsk-abcdefghijklmnopqrstuvwxyz0123\r\n")]
    [InlineData("azure.Key_with~all+allowed/characters0123==")]
    public void WellFormedKeyIsAccepted(string key)
    {
        Assert.Null(KeyEndpoints.CheckKeyFormat(key, out string trimmed));
        Assert.Equal(key.Trim(), trimmed);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("sk-tooshort")]
    [InlineData("sk-abcdefghij klmnopqrstuvwxyz0123")]
    [InlineData("sk-abcdefghij\u00A0klmnopqrstuvwxyz0123")]
    [InlineData("sk-abcdefghij\u200Dklmnopqrstuvwxyz0123")]
    [InlineData("sk-abcdefghij\uFEFFklmnopqrstuvwxyz0123")]
    [InlineData("sk-abcdefghij\u0000klmnopqrstuvwxyz0123")]
    [InlineData("sk-abcdéfghijklmnopqrstuvwxyz0123")]
    [InlineData("sk-abcdefghij\"klmnopqrstuvwxyz0123")]
    [InlineData("sk-abcdefghij,klmnopqrstuvwxyz0123")]
    [InlineData("sk-abcdefghij;klmnopqrstuvwxyz0123")]
    [InlineData("sk-abcdefghij=klmnopqrstuvwxyz0123")]
    public void MalformedKeyIsRejected(string? key)
    {
        string? problem = KeyEndpoints.CheckKeyFormat(key, out _);

        Assert.NotNull(problem);
        Assert.DoesNotContain("sk-abc", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void OverlongKeyIsRejected()
    {
        Assert.NotNull(KeyEndpoints.CheckKeyFormat("sk-" + new string('a', 600), out _));
    }
}
