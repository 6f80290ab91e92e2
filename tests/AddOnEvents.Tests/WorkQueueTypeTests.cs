using AddOnEvents.KeyWorker;
using AddOnEvents.Tests.Fixtures;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Tests;

/// <summary>Services whose work queues are classic queues, as on a single broker node that needs no replicas.</summary>
public sealed class ClassicQueueFixture : SystemFixture
{
    public override Dictionary<string, string?> CommonSettings() => new(base.CommonSettings())
    {
        ["RabbitMq:WorkQueueType"] = "classic",
    };
}

/// <summary>RabbitMq:WorkQueueType set to classic.</summary>
public sealed class WorkQueueTypeTests(ClassicQueueFixture system) : IClassFixture<ClassicQueueFixture>
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task ClassicQueuesCarryKeysAndPrompts()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-classic-queue-" + Guid.NewGuid().ToString("N"));
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "classic-user"));

        var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = "through classic queues" }).WaitAsync(Patience);
        var result = await client.WaitForResultAsync(requestId, Patience);
        var types = await system.Broker.QueueTypesAsync();

        Assert.Equal("PromptCompleted", result.Kind);
        Assert.Equal("Echo: through classic queues", result.Text);
        Assert.Equal("classic", types["prompt-requested"]);
        Assert.Equal("classic", types["key-registered"]);
    }

    [Fact]
    public async Task ClassicQueuesRejectedOnCluster()
    {
        var settings = new Dictionary<string, string?>(system.KeyWorkerSettings())
        {
            ["RabbitMq:ClusterNodes"] = $"127.0.0.1:{TestEnvironment.RabbitMqPort}",
        };

        string error = await StartFailureAsync(settings);

        Assert.Contains("RabbitMq:WorkQueueType is classic, which keeps each work queue on one node", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("stream")]
    [InlineData("Classic")]
    [InlineData("")]
    public async Task UnknownQueueTypeRejected(string type)
    {
        var settings = new Dictionary<string, string?>(system.KeyWorkerSettings()) { ["RabbitMq:WorkQueueType"] = type };

        string error = await StartFailureAsync(settings);

        Assert.Contains($"RabbitMq:WorkQueueType must be quorum or classic, not '{type}'.", error, StringComparison.Ordinal);
    }

    /// <summary>Starts a KeyWorker with the settings and returns the validation message that stopped it.</summary>
    private async Task<string> StartFailureAsync(Dictionary<string, string?> settings)
    {
        // Building can fail already: mapping the health checks creates the bus, which reads the broker settings.
        var error = await Assert.ThrowsAsync<OptionsValidationException>(async () =>
        {
            await using var worker = KeyWorkerApp.Build([], builder => system.Configure(builder, settings));
            await worker.StartAsync().WaitAsync(Patience);
            await worker.StopAsync().WaitAsync(Patience);
        });
        return error.Message;
    }
}
