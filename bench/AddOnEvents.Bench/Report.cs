using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace AddOnEvents.Bench;

/// <summary>Turns the results into Markdown tables (printed and saved) and the overhead plot.</summary>
public static class Report
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string ProgressLine(StepResult r)
    {
        var cpu = string.Join(" ", r.Usage.Processes.Where(p => !double.IsNaN(p.CpuPercent))
            .Select(p => string.Create(Invariant, $"{Short(p.Name)} {p.CpuPercent:F0}%")));
        string errors = r.Errors == 0 ? "0" : $"{r.Errors} ({string.Join(", ", r.ErrorCodes.Select(e => $"{e.Key} x{e.Value}"))})";
        return string.Create(Invariant,
            $"{r.Mode,-8} {r.Rate,5}/s{(r.Stream ? " stream" : "")}: ok {r.Ok}/{r.Sent}, errors {errors}, {r.Throughput:F0}/s, "
            + $"overhead p50 {r.Overhead.P50:F2} p95 {r.Overhead.P95:F2} p99 {r.Overhead.P99:F2} max {r.Overhead.Max:F1} ms, "
            + $"send lag p99 {r.SendLag.P99:F2} ms | CPU {cpu} | other {r.Usage.OtherCpuPercent:F0}% | load {r.Usage.LoadAverage}");
    }

    public static string Markdown(BenchSettings settings, RunResults results)
    {
        var md = new StringBuilder();
        double target = settings.TargetRate;
        md.AppendLine(Invariant, $"## Results of the run started {results.StartedAt:yyyy-MM-dd HH:mm} UTC");
        md.AppendLine();
        md.AppendLine(Machine());
        md.AppendLine();
        md.AppendLine(Invariant,
            $"Fake upstream: {settings.UpstreamLatencyMs} ms fixed latency, {settings.PiecesPerSecond} pieces/s when streaming. "
            + $"{settings.Users} SignalR users connected over WebSockets; {settings.StepDuration.TotalSeconds:F0} s per step, open loop. "
            + $"Overhead = client-observed latency (from the scheduled send) minus the time the fake upstream reports for that request. "
            + $"Sweep prompts are non-streaming in every mode (SignalR prompts send stream=false; the hub streams by default).");
        if (settings.ServiceSettings.Length > 0)
        {
            md.AppendLine();
            md.AppendLine("Service settings: " + settings.ServiceSettings);
        }

        md.AppendLine();
        foreach (var (mode, state) in results.Availability.Where(a => a.Value != "available"))
        {
            md.AppendLine(Invariant, $"- {Mode.Describe(mode)}: **{state}**");
        }

        md.AppendLine();
        md.AppendLine(Invariant, $"### Overhead at {target} prompts/s, ratio to Portkey's");
        md.AppendLine();
        md.AppendLine("| Mode | Achieved/s | OK | Errors | p50 ms | p95 ms | p99 ms | max ms | p50 / Portkey | p99 / Portkey | Latency p50 ms |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var portkeyAtTarget = Find(results.Sweep, Mode.Portkey, target);
        foreach (var r in results.Sweep.Where(r => r.Rate == target))
        {
            md.AppendLine(Invariant,
                $"| {Mode.Describe(r.Mode)} | {r.Throughput:F0} | {r.Ok} | {ErrorText(r)} | {r.Overhead.P50:F2} | {r.Overhead.P95:F2} | {r.Overhead.P99:F2} | "
                + $"{r.Overhead.Max:F1} | {Ratio(r.Overhead.P50, portkeyAtTarget?.Overhead.P50)} | {Ratio(r.Overhead.P99, portkeyAtTarget?.Overhead.P99)} | "
                + $"{r.Latency.P50:F2} |");
        }

        md.AppendLine();
        md.AppendLine("### Sweep");
        md.AppendLine();
        md.AppendLine("| Target/s | Mode | Achieved/s | Errors | p50 ms | p95 ms | p99 ms | p50 / Portkey | p99 / Portkey | No errors, p99 < 100 ms | Other CPU % |");
        md.AppendLine("|---:|---|---:|---:|---:|---:|---:|---:|---:|:---:|---:|");
        foreach (var r in results.Sweep)
        {
            var portkey = Find(results.Sweep, Mode.Portkey, r.Rate);
            md.AppendLine(Invariant,
                $"| {r.Rate} | {r.Mode} | {r.Throughput:F0} | {ErrorText(r)} | {r.Overhead.P50:F2} | {r.Overhead.P95:F2} | {r.Overhead.P99:F2} | "
                + $"{Ratio(r.Overhead.P50, portkey?.Overhead.P50)} | {Ratio(r.Overhead.P99, portkey?.Overhead.P99)} | {(r.Passes ? "yes" : "**no**")} | "
                + $"{r.Usage.OtherCpuPercent:F0} |");
        }

        md.AppendLine();
        md.AppendLine("Highest rate with no errors and p99 overhead under 100 ms:");
        md.AppendLine();
        foreach (var mode in results.Sweep.Select(r => r.Mode).Distinct())
        {
            var best = results.Sweep.Where(r => r.Mode == mode && r.Passes).MaxBy(r => r.Rate);
            var firstFail = results.Sweep.Where(r => r.Mode == mode && !r.Passes && r.Rate > (best?.Rate ?? 0)).MinBy(r => r.Rate);
            md.AppendLine(string.Create(Invariant,
                $"- {Mode.Describe(mode)}: {(best is null ? "none of the rates tried" : $"{best.Rate} prompts/s ({best.Throughput:F0} achieved)")}")
                + (firstFail is null ? "" : string.Create(Invariant, $"; fails at {firstFail.Rate}/s: {FailureReason(firstFail)}")));
        }

        md.AppendLine();
        md.AppendLine(Invariant, $"### CPU (% of one core) and RSS (MB) per process at {target} prompts/s");
        md.AppendLine();
        var atTarget = results.Sweep.Where(r => r.Rate == target).ToList();
        md.AppendLine("| Process | " + string.Join(" | ", atTarget.Select(r => r.Mode)) + " |");
        md.AppendLine("|---|" + string.Concat(atTarget.Select(_ => "---:|")));
        var names = atTarget.SelectMany(r => r.Usage.Processes.Select(p => p.Name)).Distinct().ToList();
        foreach (string name in names)
        {
            md.AppendLine($"| {name} | " + string.Join(" | ", atTarget.Select(r =>
            {
                var p = r.Usage.Processes.FirstOrDefault(x => x.Name == name);
                return double.IsNaN(p.CpuPercent) ? "-" : string.Create(Invariant, $"{p.CpuPercent:F0}% / {p.RssMb:F0}");
            })) + " |");
        }

        md.AppendLine("| Whole machine (busy, % of one core) | " + string.Join(" | ", atTarget.Select(r => string.Create(Invariant, $"{r.Usage.MachineCpuPercent:F0}%"))) + " |");
        md.AppendLine("| Not ours (other sessions on the machine) | " + string.Join(" | ", atTarget.Select(r => string.Create(Invariant, $"{r.Usage.OtherCpuPercent:F0}%"))) + " |");

        md.AppendLine();
        md.AppendLine("### CPU (% of one core) of every process in every step");
        md.AppendLine();
        var processNames = results.Sweep.SelectMany(r => r.Usage.Processes.Select(p => p.Name)).Distinct().ToList();
        md.AppendLine("| Target/s | Mode | " + string.Join(" | ", processNames) + " | Not ours | Load average |");
        md.AppendLine("|---:|---|" + string.Concat(processNames.Select(_ => "---:|")) + "---:|---|");
        foreach (var r in results.Sweep)
        {
            md.AppendLine(string.Create(Invariant, $"| {r.Rate} | {r.Mode} | ")
                + string.Join(" | ", processNames.Select(n => r.Usage.Processes.FirstOrDefault(p => p.Name == n).CpuPercent.ToString("F0", Invariant)))
                + string.Create(Invariant, $" | {r.Usage.OtherCpuPercent:F0} | {r.Usage.LoadAverage} |"));
        }

        if (results.Streams.Count > 0)
        {
            md.AppendLine();
            md.AppendLine(Invariant, $"### Streaming (stream=true) at {settings.StreamRate} prompts/s");
            md.AppendLine();
            md.AppendLine("| Mode | OK | Errors | Overhead p50 ms | p99 ms | p50 / Portkey | First piece p50 ms | First piece p99 ms | Last byte p50 ms |");
            md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            var portkeyStream = results.Streams.FirstOrDefault(r => r.Mode == Mode.Portkey);
            foreach (var r in results.Streams)
            {
                md.AppendLine(Invariant,
                    $"| {Mode.Describe(r.Mode)} | {r.Ok} | {ErrorText(r)} | {r.Overhead.P50:F2} | {r.Overhead.P99:F2} | {Ratio(r.Overhead.P50, portkeyStream?.Overhead.P50)} | "
                    + $"{r.FirstPiece?.P50:F2} | {r.FirstPiece?.P99:F2} | {r.Latency.P50:F2} |");
            }
        }

        foreach (var (hopStep, hops) in results.HopPhases)
        {
            md.AppendLine();
            md.AppendLine(Invariant,
                $"### Where the time goes: SignalR at {hopStep.Rate} prompts/s with a broker tap ({(hops.Count > 0 ? hops[0].Samples : 0)} prompts joined)");
            md.AppendLine();
            md.AppendLine(Invariant,
                $"Run before the sweep. This phase: {hopStep.Ok} answered, {ErrorText(hopStep)} errors, overhead p50 {hopStep.Overhead.P50:F2} ms, p99 {hopStep.Overhead.P99:F2} ms.");
            md.AppendLine();
            md.AppendLine("| Hop | p50 ms | p99 ms |");
            md.AppendLine("|---|---:|---:|");
            foreach (var hop in hops)
            {
                md.AppendLine(Invariant, $"| {hop.Hop} | {hop.P50:F2} | {hop.P99:F2} |");
            }
        }

        if (results.Database is { } db)
        {
            md.AppendLine();
            md.AppendLine("### Database step (jongodb), measured apart");
            md.AppendLine();
            md.AppendLine(Invariant,
                $"PromptWorker reads the app's key document once per prompt. The same read straight against jongodb: p50 {db.SequentialRead.P50:F2} ms, "
                + $"p99 {db.SequentialRead.P99:F2} ms one at a time; {db.ParallelReadsPerSecond:F0} reads/s with {db.ParallelReaders} readers in parallel.");
            md.AppendLine();
            md.AppendLine("Single-document writes in a scratch collection, shaped like PromptWorker's per-prompt result record (30 of each at every size):");
            md.AppendLine();
            md.AppendLine("| Documents in the collection | Insert p50 ms | Insert p99 ms | Update by id p50 ms | Read by id p50 ms | Insert p50 ms into an empty collection of the same database |");
            md.AppendLine("|---:|---:|---:|---:|---:|---:|");
            foreach (var w in db.Writes)
            {
                md.AppendLine(Invariant,
                    $"| {w.Documents} | {w.Insert.P50:F2} | {w.Insert.P99:F2} | {w.Update.P50:F2} | {w.ReadById.P50:F2} | {w.EmptySiblingInsert.P50:F2} |");
            }

            md.AppendLine();
            md.AppendLine("Documents per collection, before the load / after: "
                + string.Join(", ", db.Counts.Select(c => string.Create(Invariant,
                    $"{c.Key} {results.CountsBefore?.GetValueOrDefault(c.Key, -1) ?? -1} / {c.Value}"))));
        }

        if (results.Idle is { } idle)
        {
            md.AppendLine();
            md.AppendLine("### Idle connections on one Ingress");
            md.AppendLine();
            md.AppendLine(Invariant,
                $"{idle.Connected} of {idle.Requested} users connected in {idle.ConnectTime.TotalSeconds:F1} s. Ingress RSS {idle.IngressRssBeforeMb:F0} MB before, "
                + $"{idle.IngressRssAfterMb:F0} MB with them connected: **{idle.KbPerConnection:F1} KB per connection**. Ingress CPU while they idle "
                + $"(keep-alive pings): {idle.IngressCpuPercent:F1}% of one core. The client's RSS grew by {idle.ClientRssDeltaMb:F0} MB.");
        }

        md.AppendLine();
        md.AppendLine("### Targets");
        md.AppendLine();
        foreach (string line in Targets(settings, results))
        {
            md.AppendLine("- " + line);
        }

        foreach (string note in results.Notes)
        {
            md.AppendLine();
            md.AppendLine("Note: " + note);
        }

        return md.ToString();
    }

    public static IEnumerable<string> Targets(BenchSettings settings, RunResults results)
    {
        double target = settings.TargetRate;
        var portkey = Find(results.Sweep, Mode.Portkey, target);
        // A run limited by BENCH_MODES reports only the modes it ran.
        foreach (string mode in new[] { Mode.SignalR, Mode.OpenAiEndpoint }.Where(m => settings.Modes.Contains(m)))
        {
            var bestPass = results.Sweep.Where(x => x.Mode == mode && x.Passes).MaxBy(x => x.Rate);
            var portkeyThere = bestPass is null ? null : Find(results.Sweep, Mode.Portkey, bestPass.Rate);
            if (bestPass is not null && portkeyThere is not null && bestPass.Rate != target)
            {
                yield return string.Create(Invariant,
                    $"{Mode.Describe(mode)} vs Portkey at {bestPass.Rate}/s, the highest rate it passes: p50 {bestPass.Overhead.P50:F2} vs {portkeyThere.Overhead.P50:F2} ms "
                    + $"({Ratio(bestPass.Overhead.P50, portkeyThere.Overhead.P50)}), p99 {bestPass.Overhead.P99:F2} vs {portkeyThere.Overhead.P99:F2} ms "
                    + $"({Ratio(bestPass.Overhead.P99, portkeyThere.Overhead.P99)}).");
            }

            var r = Find(results.Sweep, mode, target);
            if (r is null)
            {
                string availability = results.Availability.GetValueOrDefault(mode, "not run");
                var last = results.Sweep.Where(x => x.Mode == mode).MaxBy(x => x.Rate);
                yield return availability != "available" || last is null
                    ? $"{Mode.Describe(mode)}: not measured ({(last is null && availability == "available" ? "no step ran" : availability)})."
                    : string.Create(Invariant,
                        $"{Mode.Describe(mode)}: not measured at {target}/s because it collapsed at {last?.Rate}/s ({(last is null ? "" : FailureReason(last))}); every target missed.");
                continue;
            }

            yield return string.Create(Invariant,
                $"{Mode.Describe(mode)} at {target}/s with {settings.Users} users: p50 {r.Overhead.P50:F2} ms (target 2 ms: {Verdict(r.Overhead.P50, 2)}), "
                + $"p99 {r.Overhead.P99:F2} ms (target 10 ms: {Verdict(r.Overhead.P99, 10)}).");
            if (portkey is not null)
            {
                yield return string.Create(Invariant,
                    $"{Mode.Describe(mode)} vs Portkey at {target}/s: p50 {Ratio(r.Overhead.P50, portkey.Overhead.P50)}, p99 {Ratio(r.Overhead.P99, portkey.Overhead.P99)} "
                    + $"(target: at most 1x; {(r.Overhead.P50 <= portkey.Overhead.P50 && r.Overhead.P99 <= portkey.Overhead.P99 ? "met" : "missed")}).");
            }

            var best = results.Sweep.Where(x => x.Mode == mode && x.Passes).MaxBy(x => x.Rate);
            double bestRate = best?.Rate ?? 0;
            yield return string.Create(Invariant,
                $"{Mode.Describe(mode)} throughput: highest passing rate {bestRate}/s (target 2000/s: {(bestRate >= 2000 ? "met" : $"missed by {2000 - bestRate}/s")}).");
        }

        // The broker hops alone bound every figure above from below, so the targets line shows them beside the pipeline's.
        foreach (var floor in results.Sweep.Where(x => x.Mode == Mode.BusFloor && (x.Rate == target || x.Rate == 2000)))
        {
            string busCpu = string.Join(", ", floor.Usage.Processes.Where(p => p.Name is "RabbitMQ" or "Bench client")
                .Select(p => string.Create(Invariant, $"{p.Name} {p.CpuPercent:F0}%")));
            yield return string.Create(Invariant,
                $"{Mode.Describe(Mode.BusFloor)} at {floor.Rate}/s: p50 {floor.Overhead.P50:F2} ms, p99 {floor.Overhead.P99:F2} ms, "
                + $"{(floor.Passes ? "passes" : "fails")}; CPU {busCpu} (of one core each, on a machine of {Environment.ProcessorCount}).");
        }

        if (results.Idle is { } idle)
        {
            yield return string.Create(Invariant,
                $"{idle.Connected} idle users on one Ingress: {idle.KbPerConnection:F1} KB per connection ({(idle.Connected >= 10_000 ? "met" : "missed")}).");
        }
    }

    public static void Plot(BenchSettings settings, RunResults results, string path)
    {
        var rates = results.Sweep.Select(r => r.Rate).Distinct().Order().ToArray();
        if (rates.Length == 0)
        {
            return;
        }

        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int colorIndex = 0;
        foreach (string mode in results.Sweep.Select(r => r.Mode).Distinct())
        {
            var color = palette.GetColor(colorIndex++);
            var rows = results.Sweep.Where(r => r.Mode == mode && r.Ok > 0).OrderBy(r => r.Rate).ToList();
            double[] xs = rows.Select(r => (double)Array.IndexOf(rates, r.Rate)).ToArray();
            var p50 = plot.Add.Scatter(xs, rows.Select(r => Math.Log10(Math.Max(0.01, r.Overhead.P50))).ToArray());
            p50.Color = color;
            p50.LineWidth = 2;
            p50.MarkerSize = 7;
            p50.LegendText = Mode.Describe(mode) + " p50";
            var p99 = plot.Add.Scatter(xs, rows.Select(r => Math.Log10(Math.Max(0.01, r.Overhead.P99))).ToArray());
            p99.Color = color;
            p99.LineWidth = 2;
            p99.MarkerSize = 7;
            p99.LinePattern = ScottPlot.LinePattern.Dashed;
            p99.LegendText = Mode.Describe(mode) + " p99";
        }

        var targetLine = plot.Add.HorizontalLine(1);
        targetLine.Color = ScottPlot.Colors.Gray;
        targetLine.LinePattern = ScottPlot.LinePattern.Dotted;
        targetLine.LegendText = "p99 target, 10 ms";

        double[] decades = [-2, -1, 0, 1, 2, 3, 4, 5];
        plot.Axes.Left.SetTicks(decades, decades.Select(d => Math.Pow(10, d).ToString("0.##", Invariant)).ToArray());
        plot.Axes.Bottom.SetTicks(rates.Select((_, i) => (double)i).ToArray(), rates.Select(r => r.ToString(Invariant)).ToArray());
        plot.Axes.SetLimitsX(-0.3, rates.Length - 0.7);
        plot.Title(string.Create(Invariant,
            $"Overhead over a {settings.UpstreamLatencyMs} ms upstream, {settings.Users} users, {Environment.ProcessorCount} cores ({results.StartedAt:yyyy-MM-dd})"));
        plot.XLabel("Target rate (prompts/s), open loop");
        plot.YLabel("Overhead (ms, log scale)");
        plot.ShowLegend(ScottPlot.Edge.Right);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        plot.SavePng(path, 1100, 650);
    }

    public static string Machine()
    {
        string cpu = ReadFirst("/proc/cpuinfo", "model name")?.Split(':', 2)[1].Trim() ?? "unknown CPU";
        string memory = ReadFirst("/proc/meminfo", "MemTotal")?.Split(':', 2)[1].Trim() ?? "?";
        string os = ReadFirst("/etc/os-release", "PRETTY_NAME=")?.Split('=', 2)[1].Trim('"') ?? RuntimeInformation.OSDescription;
        string kernel = File.Exists("/proc/sys/kernel/osrelease") ? File.ReadAllText("/proc/sys/kernel/osrelease").Trim() : "?";
        return string.Create(Invariant,
            $"Machine: {Environment.ProcessorCount} cores ({cpu}), {ParseKb(memory) / 1048576.0:F1} GiB memory, {os}, kernel {kernel}, "
            + $"{RuntimeInformation.FrameworkDescription}, Node.js {Environment.GetEnvironmentVariable("BENCH_NODE_VERSION") ?? "?"}. "
            + $"Load average at the end: {ProcessMeter.ReadLoadAverage()}.");
    }

    private static double ParseKb(string text) =>
        double.TryParse(text.Replace("kB", "", StringComparison.Ordinal).Trim(), NumberStyles.Float, Invariant, out double kb) ? kb : double.NaN;

    private static string? ReadFirst(string path, string prefix) =>
        File.Exists(path) ? File.ReadLines(path).FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal)) : null;

    private static StepResult? Find(IEnumerable<StepResult> results, string mode, double rate) =>
        results.FirstOrDefault(r => r.Mode == mode && r.Rate == rate);

    private static string Ratio(double value, double? portkey) =>
        portkey is { } p && p > 0 && !double.IsNaN(value) ? string.Create(Invariant, $"{value / p:F2}x") : "-";

    private static string Verdict(double value, double limit) =>
        value <= limit ? "met" : string.Create(Invariant, $"missed by {value - limit:F2} ms");

    private static string ErrorText(StepResult r) => r.Errors == 0
        ? "0"
        : string.Create(Invariant, $"{r.Errors} ({string.Join(", ", r.ErrorCodes.OrderByDescending(e => e.Value).Select(e => $"{e.Key} x{e.Value}"))})");

    private static string FailureReason(StepResult r) =>
        r.Errors > 0
            ? string.Create(Invariant, $"{r.Errors} errors of {r.Sent}, p99 {r.Overhead.P99:F1} ms")
            : string.Create(Invariant, $"p99 {r.Overhead.P99:F1} ms");

    private static string Short(string name) => name switch
    {
        "Ingress" => "ING",
        "KeyWorker" => "KW",
        "PromptWorker" => "PW",
        "FakeUpstream" => "fake",
        "RabbitMQ" => "rmq",
        "jongodb" => "db",
        "Portkey" => "pk",
        "Bench client" => "bench",
        _ => name,
    };
}
