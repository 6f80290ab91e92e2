using System.Diagnostics;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>
/// One service run as its own process from its build output, so a test can kill it the way an operating system
/// or an orchestrator would. Its console output, at the most verbose log level, goes into a <see cref="LogCapture"/>.
/// </summary>
public sealed class ServiceProcess : IAsyncDisposable
{
    private readonly Process _process;

    private ServiceProcess(Process process)
    {
        _process = process;
    }

    public bool HasExited => _process.HasExited;

    public static ServiceProcess Start(string project, IDictionary<string, string?> settings, LogCapture logs)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(AssemblyPath(project));
        start.ArgumentList.Add("--urls=http://127.0.0.1:0");
        foreach (var (key, value) in settings)
        {
            start.Environment[key.Replace(":", "__", StringComparison.Ordinal)] = value;
        }

        start.Environment["Logging__Console__FormatterName"] = "simple";
        start.Environment["DOTNET_ENVIRONMENT"] = "Production";
        var process = Process.Start(start) ?? throw new InvalidOperationException($"Failed to start {project}.");
        process.OutputDataReceived += (_, e) => logs.Add(project, e.Data);
        process.ErrorDataReceived += (_, e) => logs.Add(project, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return new ServiceProcess(process);
    }

    /// <summary>Kills the process and its children at once, with no chance to finish or acknowledge anything.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process.Dispose();
    }

    /// <summary>Returns the service's build output next to the test's, with the same configuration.</summary>
    private static string AssemblyPath(string project)
    {
        var testOutput = new DirectoryInfo(AppContext.BaseDirectory);
        string configuration = testOutput.Parent!.Name;
        var repo = testOutput;
        while (repo is not null && !File.Exists(Path.Combine(repo.FullName, "AddOnEvents.sln")))
        {
            repo = repo.Parent;
        }

        string path = Path.Combine(repo?.FullName ?? throw new InvalidOperationException("AddOnEvents.sln not found above the test output."),
            "src", project, "bin", configuration, "net10.0", $"AddOnEvents.{project}.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException($"Build {project} first: {path} is missing.", path);
    }
}
