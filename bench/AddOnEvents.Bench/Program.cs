using System.Text.Json;
using AddOnEvents.Bench;
using AddOnEvents.Tests.Fixtures;

if (args.Length > 0 && args[0] == "fake-upstream")
{
    return await StandaloneFakeUpstream.RunAsync(args[1..]);
}

if (args.Length == 2 && args[0] == "db-probe")
{
    // Times jongodb alone: single-document writes as a collection grows.
    var db = new MongoDB.Driver.MongoClient(args[1]).GetDatabase("benchprobe");
    foreach (var w in await DatabaseProbe.MeasureWritesAsync(db, DatabaseProbe.WriteSizes, CancellationToken.None))
    {
        Console.WriteLine(
            $"{w.Documents,6} docs: insert p50 {w.Insert.P50:F2} p99 {w.Insert.P99:F2} ms, update p50 {w.Update.P50:F2} ms, read p50 {w.ReadById.P50:F2} ms, fill {w.FillPerSecond:F0}/s");
    }

    return 0;
}

if (args.Length != 1 || args[0] != "run")
{
    await Console.Error.WriteLineAsync($"usage: AddOnEvents.Bench run   (started by ./bench.sh)\n       AddOnEvents.Bench {StandaloneFakeUpstream.Usage}");
    return 2;
}

var settings = BenchSettings.FromEnvironment();
using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};

// Many connections start at once; without spare threads the pool grows slowly and adds seconds to the first steps.
ThreadPool.SetMinThreads(Math.Max(64, Environment.ProcessorCount * 16), 64);

var results = await new Runner(settings).RunAsync(stop.Token);
Directory.CreateDirectory(settings.OutputDirectory);
string markdown = Report.Markdown(settings, results);
await File.WriteAllTextAsync(Path.Combine(settings.OutputDirectory, "results.md"), markdown);
await File.WriteAllTextAsync(Path.Combine(settings.OutputDirectory, "results.json"),
    JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
Report.Plot(settings, results, settings.PlotPath);
Console.WriteLine();
Console.WriteLine(markdown);
Console.WriteLine($"Saved {Path.Combine(settings.OutputDirectory, "results.md")}, results.json and the plot {settings.PlotPath}");
return 0;
