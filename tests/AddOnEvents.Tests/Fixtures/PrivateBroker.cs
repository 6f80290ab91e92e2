using System.Diagnostics;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>
/// A RabbitMQ node of one test class, started with the project's own scripts/infra.sh, so the test can stop and
/// start the broker without disturbing the node that the other tests share.
/// </summary>
public sealed class PrivateBroker : IAsyncDisposable
{
    private readonly string _repository;
    private readonly string _directory;

    private PrivateBroker(string repository, string directory, int port, string node)
    {
        _repository = repository;
        _directory = directory;
        Port = port;
        Node = node;
    }

    public int Port { get; }

    public string Node { get; }

    public static async Task<PrivateBroker> StartAsync()
    {
        string repository = RepositoryRoot();
        for (int attempt = 1; ; attempt++)
        {
            string directory = Path.Combine(repository, ".run", "broker-" + Guid.NewGuid().ToString("N")[..8]);
            try
            {
                string output = await RunAsync(repository,
                    $"source scripts/infra.sh && port=$(infra_free_rabbitmq_port) && infra_start_rabbitmq '{directory}' \"$port\" >&2 && echo \"$port\"");
                int port = int.Parse(output.Trim().Split('\n')[^1], System.Globalization.CultureInfo.InvariantCulture);
                return new PrivateBroker(repository, directory, port, $"addon-{port}@localhost");
            }
            catch (InvalidOperationException) when (attempt < 3)
            {
                // A port that was free when chosen can be taken before the node binds it; another port is tried.
            }
        }
    }

    /// <summary>Stops the RabbitMQ application on the node: every connection drops; durable queues keep their messages.</summary>
    public Task StopAppAsync() => CtlAsync("stop_app");

    public Task StartAppAsync() => CtlAsync("start_app");

    public async ValueTask DisposeAsync()
    {
        await RunAsync(_repository, $"source scripts/infra.sh && infra_stop_rabbitmq '{_directory}'");
    }

    private Task CtlAsync(string command) =>
        RunAsync(_repository, $"source scripts/infra.sh && infra_rabbitmq_cli '{_directory}' rabbitmqctl -n '{Node}' {command}");

    private static async Task<string> RunAsync(string workingDirectory, string script)
    {
        var start = new ProcessStartInfo("bash")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(script);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(90));
        return process.ExitCode == 0
            ? await stdout
            : throw new InvalidOperationException($"'{script}' failed with {process.ExitCode}: {await stderr}");
    }

    private static string RepositoryRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "AddOnEvents.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new InvalidOperationException("AddOnEvents.sln not found above the test output.");
    }
}
