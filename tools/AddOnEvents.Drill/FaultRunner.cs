using System.Diagnostics;

namespace AddOnEvents.Drill;

/// <summary>A fault as it happened: when its command started and ended, and what the command reported.</summary>
public sealed record FaultRun(string Name, TimeSpan StartedAt, TimeSpan EndedAt, int ExitCode, string Description);

/// <summary>Runs the fault command for each step of the schedule at its time, one after the other.</summary>
public sealed class FaultRunner(DrillSettings settings, Ledger ledger)
{
    private readonly List<FaultRun> _runs = [];

    public IReadOnlyList<FaultRun> Runs
    {
        get
        {
            lock (_runs)
            {
                return [.. _runs];
            }
        }
    }

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        foreach (var step in settings.Faults)
        {
            var wait = step.At - ledger.Now;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait, cancellationToken);
            }

            var started = ledger.Now;
            DrillLog.Write($"fault {step.Name}: starting");
            var (exitCode, description) = await ExecuteAsync(step.Name, cancellationToken);
            var run = new FaultRun(step.Name, started, ledger.Now, exitCode, description);
            lock (_runs)
            {
                _runs.Add(run);
            }

            DrillLog.Write($"fault {step.Name}: {(exitCode == 0 ? "done" : $"FAILED with exit code {exitCode}")} in "
                + $"{(run.EndedAt - run.StartedAt).TotalSeconds:F1} s: {description}");
        }
    }

    /// <summary>Runs the command with the fault's name; its last line of output describes what it did.</summary>
    private async Task<(int ExitCode, string Description)> ExecuteAsync(string name, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(settings.FaultCommand))
        {
            return (1, "DRILL_FAULT_COMMAND is not set");
        }

        var start = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(settings.FaultCommand + " \"$1\"");
        start.ArgumentList.Add("drill-fault");
        start.ArgumentList.Add(name);
        using var process = Process.Start(start) ?? throw new InvalidOperationException("bash did not start.");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        foreach (string line in (await stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            DrillLog.Write($"fault {name}: {line}");
        }

        string last = (await stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "";
        return (process.ExitCode, last);
    }
}

public static class DrillLog
{
    public static void Write(string message) => Console.WriteLine($"[drill {DateTime.Now:HH:mm:ss.f}] {message}");
}
