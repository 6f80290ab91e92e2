using AddOnEvents.Drill;
using AddOnEvents.Tests.Fixtures;

if (args.Length > 0 && args[0] == "fake-upstream")
{
    return await StandaloneFakeUpstream.RunAsync(args[1..]);
}

if (args.Length != 1 || args[0] != "run")
{
    await Console.Error.WriteLineAsync(
        $"usage: AddOnEvents.Drill run   (started by scripts/cluster-drill.sh)\n       AddOnEvents.Drill {StandaloneFakeUpstream.Usage}");
    return 2;
}

DrillSettings settings;
try
{
    settings = DrillSettings.FromEnvironment();
}
catch (FormatException ex)
{
    await Console.Error.WriteLineAsync($"drill: {ex.Message}");
    return 2;
}

using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};

// Every user's connection and the open-loop sender start many tasks at once; a cold thread pool would add seconds.
ThreadPool.SetMinThreads(Math.Max(32, Environment.ProcessorCount * 8), 32);

var outcome = await new Drill(settings).RunAsync(stop.Token);
Console.WriteLine();
Console.WriteLine(DrillReport.Text(settings, outcome));
return outcome.Passed ? 0 : 1;
