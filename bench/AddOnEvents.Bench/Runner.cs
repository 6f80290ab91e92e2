using System.Diagnostics;
using System.Globalization;

namespace AddOnEvents.Bench;

/// <summary>Everything one run measured, for the report and the plot.</summary>
public sealed class RunResults
{
    public DateTime StartedAt { get; } = DateTime.UtcNow;

    public Dictionary<string, string> Availability { get; } = new(StringComparer.Ordinal);

    public List<StepResult> Sweep { get; } = [];

    public List<StepResult> Streams { get; } = [];

    public List<(StepResult Step, IReadOnlyList<HopRow> Hops)> HopPhases { get; } = [];

    public DatabaseFigures? Database { get; set; }

    public IReadOnlyDictionary<string, long>? CountsBefore { get; set; }

    public IdleFigures? Idle { get; set; }

    public List<string> Notes { get; } = [];
}

public sealed record IdleFigures(int Requested, int Connected, TimeSpan ConnectTime, double IngressRssBeforeMb, double IngressRssAfterMb,
    double ClientRssDeltaMb, double IngressCpuPercent)
{
    public double KbPerConnection => Connected == 0 ? double.NaN : (IngressRssAfterMb - IngressRssBeforeMb) * 1024 / Connected;
}

/// <summary>One hop of a prompt's trip, with its median and p99 in milliseconds.</summary>
public sealed record HopRow(string Hop, double P50, double P99, long Samples);

/// <summary>Runs the phases in order: setup, sweep, streams, hop breakdown, database, idle connections.</summary>
public sealed class Runner(BenchSettings settings)
{
    private readonly RunResults _results = new();
    private readonly ProcessMeter _meter = new([.. settings.Processes, ("Bench client", Environment.ProcessId)]);
    private int _stepId;

    public async Task<RunResults> RunAsync(CancellationToken cancellationToken)
    {
        using var setup = new AddOnEventsSetup(settings.IngressUrl, settings.AdminToken);
        using var broker = new BrokerAdmin(settings.RabbitMqManagementPort);

        Log($"Creating the benchmark app and waiting for its key to become active");
        var app = await setup.CreateAppAsync(cancellationToken);
        Log($"Issuing {settings.Users} end-user tokens");
        string[] tokens = await setup.IssueTokensAsync(app, "user", settings.Users, cancellationToken);
        if (settings.MongoUri is { } mongo)
        {
            _results.CountsBefore = await DatabaseProbe.CountAsync(mongo, settings.MongoDatabase, settings.Collections, cancellationToken);
        }

        Log($"Connecting {settings.Users} SignalR users over WebSockets");
        var connectWatch = Stopwatch.StartNew();
        var hubUrl = new Uri(settings.IngressUrl, "hubs/addon");
        var signalr = await SignalRTarget.ConnectAsync(hubUrl, tokens, 64, cancellationToken);
        Log($"Connected {signalr.Count} users in {connectWatch.Elapsed.TotalSeconds:F1} s");

        var fakeChat = new Uri(settings.FakeUpstreamUrl, "v1/chat/completions");
        using var direct = new HttpChatTarget(Mode.Direct, fakeChat, _ => AddOnEventsSetup.ProviderKey);
        using var openAi = new HttpChatTarget(Mode.OpenAiEndpoint, new Uri(settings.IngressUrl, "v1/chat/completions"),
            sequence => tokens[sequence % tokens.Length]);
        using var portkey = settings.PortkeyUrl is { } portkeyUrl
            ? new HttpChatTarget(Mode.Portkey, new Uri(portkeyUrl, "v1/chat/completions"), _ => AddOnEventsSetup.ProviderKey,
                [("x-portkey-provider", "openai"), ("x-portkey-custom-host", new Uri(settings.FakeUpstreamUrl, "v1").ToString())])
            : null;

        var targets = new Dictionary<string, ILoadTarget>(StringComparer.Ordinal)
        {
            [Mode.Direct] = direct,
            [Mode.SignalR] = signalr,
            [Mode.OpenAiEndpoint] = openAi,
        };
        if (portkey is not null)
        {
            targets[Mode.Portkey] = portkey;
        }

        await ProbeAsync(Mode.Direct, direct, cancellationToken);
        _results.Availability[Mode.SignalR] = "available";
        await ProbeAsync(Mode.OpenAiEndpoint, openAi, cancellationToken);
        if (portkey is not null)
        {
            await ProbeAsync(Mode.Portkey, portkey, cancellationToken);
        }
        else
        {
            _results.Availability[Mode.Portkey] = "not available: Portkey was not started (BENCH_PORTKEY_URL is empty)";
        }

        await using var busFloor = settings.Modes.Contains(Mode.BusFloor) && settings.RabbitMqPort > 0
            ? await BusFloorTarget.StartAsync(settings.RabbitMqPort, settings.Concurrency, settings.BusFloorQueueType, cancellationToken)
            : null;
        if (busFloor is not null)
        {
            targets[Mode.BusFloor] = busFloor;
            _results.Availability[Mode.BusFloor] = "available";
        }
        else if (settings.Modes.Contains(Mode.BusFloor))
        {
            _results.Availability[Mode.BusFloor] = "not available: the broker's port is unknown (BENCH_RABBITMQ_PORT is empty)";
        }

        var modes = settings.Modes.Where(m => targets.ContainsKey(m) && _results.Availability.GetValueOrDefault(m) == "available").ToList();
        foreach (var (mode, state) in _results.Availability.Where(a => a.Value != "available"))
        {
            Log($"{Mode.Describe(mode)}: {state}");
        }

        // The warm-up stays at the sweep's lowest rate, because a rate above what jongodb sustains slows its writes
        // down for the rest of the run.
        double warmUpRate = settings.Rates.Min();
        Log($"Warming up every mode for 5 s at {warmUpRate:F0} prompts/s (not counted)");
        foreach (string mode in modes)
        {
            await RunStepAsync(targets[mode], warmUpRate, TimeSpan.FromSeconds(5), broker, stream: false, hops: false, cancellationToken);
        }

        if (settings.HopDuration > TimeSpan.Zero && modes.Contains(Mode.SignalR) && broker.Enabled)
        {
            foreach (double rate in settings.HopRates)
            {
                await RunHopBreakdownAsync(signalr, broker, rate, cancellationToken);
            }
        }

        Log($"Sweep: {string.Join(", ", settings.Rates)} prompts/s, {settings.StepDuration.TotalSeconds:F0} s per step, modes in turn at each rate");
        var collapsed = new HashSet<string>(StringComparer.Ordinal);
        foreach (double rate in settings.Rates)
        {
            foreach (string mode in modes.Where(m => !collapsed.Contains(m)))
            {
                var result = await RunStepAsync(targets[mode], rate, settings.StepDuration, broker, stream: false, hops: false, cancellationToken);
                _results.Sweep.Add(result);
                if (result.Collapsed)
                {
                    collapsed.Add(mode);
                    Log($"{Mode.Describe(mode)} collapsed at {rate} prompts/s; higher rates are skipped for it");
                }
            }
        }

        if (settings.StreamDuration > TimeSpan.Zero)
        {
            Log($"Streaming: stream=true at {settings.StreamRate} prompts/s, {settings.PiecesPerSecond} pieces/s from the fake");
            // The bus floor has no upstream to stream from.
            foreach (string mode in modes.Where(m => m != Mode.BusFloor))
            {
                _results.Streams.Add(await RunStepAsync(targets[mode], settings.StreamRate, settings.StreamDuration, broker, stream: true,
                    hops: false, cancellationToken));
            }
        }

        if (settings.MongoUri is { } uri)
        {
            Log("Timing the key read straight against jongodb");
            _results.Database = await DatabaseProbe.MeasureAsync(uri, settings.MongoDatabase, app.AppId, settings.Collections, cancellationToken);
        }

        Log("Closing the load users");
        await signalr.DisposeAsync();
        if (settings.IdleUsers > 0)
        {
            _results.Idle = await MeasureIdleAsync(setup, app, cancellationToken);
        }

        return _results;
    }

    private async Task ProbeAsync(string mode, HttpChatTarget target, CancellationToken cancellationToken)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(15));
            var (status, body) = await target.ProbeAsync(timeout.Token);
            _results.Availability[mode] = status == 200 && TimingMarker.TryFind(body, out _, out _)
                ? "available"
                : $"not available: HTTP {status} {Shorten(body)}";
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException)
        {
            _results.Availability[mode] = $"not available: {ex.GetType().Name} {Shorten(ex.Message)}";
        }
    }

    private async Task<StepResult> RunStepAsync(ILoadTarget target, double rate, TimeSpan duration, BrokerAdmin broker, bool stream, bool hops,
        CancellationToken cancellationToken)
    {
        var step = new LoadStep(++_stepId, target.Mode, rate, stream, hops);
        var signalr = target as SignalRTarget;
        signalr?.Attach(step);
        var before = _meter.Take();
        await OpenLoop.RunAsync(target, step, rate, duration);
        var sendingEnded = Stopwatch.StartNew();
        while (step.InFlight > 0 && sendingEnded.Elapsed < settings.DrainTimeout)
        {
            await Task.Delay(20, cancellationToken);
        }

        var after = _meter.Take();
        int expired = step.InFlight;
        step.ExpireRemaining();
        signalr?.Detach(step);
        var result = step.Result(_meter.Usage(before, after));
        if (expired > 0 && broker.Enabled)
        {
            var settle = Stopwatch.StartNew();
            var (dropped, settled) = await broker.SettleAsync(TimeSpan.FromSeconds(60), cancellationToken);
            Log($"  {expired} prompts still in flight after {settings.DrainTimeout.TotalSeconds:F0} s; purged {dropped} queued messages; "
                + (settled ? $"queues empty after {settle.Elapsed.TotalSeconds:F0} s" : "queues still not empty after 60 s"));
        }

        Log(Report.ProgressLine(result));
        return result;
    }

    private async Task RunHopBreakdownAsync(SignalRTarget signalr, BrokerAdmin broker, double rate, CancellationToken cancellationToken)
    {
        var exchanges = await broker.ExchangesAsync(cancellationToken);
        string? requested = exchanges.FirstOrDefault(e => e.EndsWith(":PromptRequested", StringComparison.Ordinal));
        string? completed = exchanges.FirstOrDefault(e => e.EndsWith(":PromptCompleted", StringComparison.Ordinal));
        string? resultQueue = (await broker.QueuesAsync(cancellationToken)).Select(q => q.Name)
            .FirstOrDefault(n => n.StartsWith("ingress-results-", StringComparison.Ordinal));
        if (requested is null || completed is null || resultQueue is null)
        {
            _results.Notes.Add("Hop breakdown skipped: the PromptRequested/PromptCompleted exchanges or the Ingress result queue were not found.");
            return;
        }

        Log($"Hop breakdown: SignalR at {rate} prompts/s with a broker tap (a copy of every message; not part of the sweep)");
        await using var tap = await BrokerTap.StartAsync(settings.RabbitMqPort, requested, completed, resultQueue["ingress-results-".Length..],
            cancellationToken);
        var result = await RunStepAsync(signalr, rate, settings.HopDuration, broker, stream: false, hops: true, cancellationToken);
        _results.HopPhases.Add((result, HopBreakdown.Compute(result.Hops, tap.Requested, tap.Completed)));
    }

    private async Task<IdleFigures> MeasureIdleAsync(AddOnEventsSetup setup, BenchApp app, CancellationToken cancellationToken)
    {
        int ingressPid = settings.Processes.FirstOrDefault(p => p.Name == "Ingress").Pid;
        Log($"Idle connections: issuing {settings.IdleUsers} tokens");
        string[] tokens = await setup.IssueTokensAsync(app, "idle", settings.IdleUsers, cancellationToken);
        await Task.Delay(3000, cancellationToken);
        var ingressBefore = ProcessMeter.Read(ingressPid);
        var clientBefore = ProcessMeter.Read(Environment.ProcessId);
        Log($"Connecting {settings.IdleUsers} idle users to one Ingress (Ingress RSS before: {Mb(ingressBefore):F0} MB)");
        var watch = Stopwatch.StartNew();
        var hubUrl = new Uri(settings.IngressUrl, "hubs/addon");
        var connections = new List<Microsoft.AspNetCore.SignalR.Client.HubConnection>();
        int failed = 0;
        const int batch = 1000;
        for (int start = 0; start < tokens.Length; start += batch)
        {
            try
            {
                connections.AddRange(await HubConnections.OpenAsync(hubUrl, tokens[start..Math.Min(tokens.Length, start + batch)], 100, cancellationToken));
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException or InvalidOperationException or System.Net.WebSockets.WebSocketException)
            {
                failed += batch;
                Log($"  a batch of connections failed: {ex.GetType().Name}: {Shorten(ex.Message)}");
            }
        }

        var connectTime = watch.Elapsed;
        Log($"Connected {connections.Count} in {connectTime.TotalSeconds:F1} s; holding them idle for 10 s");
        var cpuBefore = _meter.Take();
        await Task.Delay(10_000, cancellationToken);
        var cpuAfter = _meter.Take();
        var ingressAfter = ProcessMeter.Read(ingressPid);
        var clientAfter = ProcessMeter.Read(Environment.ProcessId);
        double ingressCpu = _meter.Usage(cpuBefore, cpuAfter).Processes.FirstOrDefault(p => p.Name == "Ingress").CpuPercent;
        var figures = new IdleFigures(settings.IdleUsers, connections.Count, connectTime, Mb(ingressBefore), Mb(ingressAfter),
            Mb(clientAfter) - Mb(clientBefore), ingressCpu);
        Log($"Ingress RSS {figures.IngressRssBeforeMb:F0} -> {figures.IngressRssAfterMb:F0} MB: {figures.KbPerConnection:F1} KB per connection"
            + (failed > 0 ? $" ({failed} failed)" : ""));
        await HubConnections.CloseAsync(connections, 200);
        return figures;
    }

    private static double Mb(ProcessSample? sample) => sample is { } s ? s.RssBytes / 1048576.0 : double.NaN;

    private static string Shorten(string text) => text.Length > 160 ? text[..160] + "..." : text.ReplaceLineEndings(" ");

    public static void Log(string line) =>
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{DateTime.Now:HH:mm:ss}] {line}"));
}
