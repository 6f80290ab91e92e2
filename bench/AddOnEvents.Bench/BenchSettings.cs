using System.Globalization;

namespace AddOnEvents.Bench;

/// <summary>What bench.sh started and how hard to push, read from BENCH_* environment variables.</summary>
public sealed record BenchSettings
{
    public required Uri IngressUrl { get; init; }

    public required Uri FakeUpstreamUrl { get; init; }

    /// <summary>Root of the Portkey gateway, or null when it was not started.</summary>
    public Uri? PortkeyUrl { get; init; }

    public required string AdminToken { get; init; }

    public string? MongoUri { get; init; }

    public string MongoDatabase { get; init; } = "addonevents";

    /// <summary>Collections to count before and after the load, since jongodb cannot list them.</summary>
    public IReadOnlyList<string> Collections { get; init; } = [];

    public int RabbitMqPort { get; init; }

    public int RabbitMqManagementPort { get; init; }

    /// <summary>Processes whose CPU time and RSS each phase reports, by display name.</summary>
    public IReadOnlyList<(string Name, int Pid)> Processes { get; init; } = [];

    public string OutputDirectory { get; init; } = ".run/bench";

    public string PlotPath { get; init; } = "docs/benchmarks/overhead.png";

    public int Users { get; init; } = 1000;

    public int IdleUsers { get; init; } = 10_000;

    public IReadOnlyList<double> Rates { get; init; } = [10, 25, 50, 100, 250, 500, 1000, 2000];

    /// <summary>The rate the comparison table and the targets refer to.</summary>
    public double TargetRate { get; init; } = 500;

    public TimeSpan StepDuration { get; init; } = TimeSpan.FromSeconds(12);

    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(10);

    public IReadOnlyList<string> Modes { get; init; } = [Mode.Direct, Mode.SignalR, Mode.OpenAiEndpoint, Mode.Portkey, Mode.BusFloor];

    public double StreamRate { get; init; } = 20;

    public TimeSpan StreamDuration { get; init; } = TimeSpan.FromSeconds(8);

    public TimeSpan HopDuration { get; init; } = TimeSpan.FromSeconds(8);

    /// <summary>Rates of the hop breakdown phases, run before the sweep while the database is still small.</summary>
    public IReadOnlyList<double> HopRates { get; init; } = [50, 150];

    /// <summary>Fake upstream settings, for the report only: bench.sh started the fake with them.</summary>
    public double UpstreamLatencyMs { get; init; } = 50;

    public double PiecesPerSecond { get; init; } = 100;

    /// <summary>RabbitMq__PrefetchCount and RabbitMq__ConcurrentMessageLimit of the services, which the bus floor uses too.</summary>
    public ushort Concurrency { get; init; } = 256;

    /// <summary>Type of the bus floor's request queue: quorum, like PromptWorker's by default, or classic.</summary>
    public string BusFloorQueueType { get; init; } = "quorum";

    /// <summary>Services' bus settings, for the report only.</summary>
    public string ServiceSettings { get; init; } = "";

    public static BenchSettings FromEnvironment()
    {
        return new BenchSettings
        {
            IngressUrl = new Uri(Required("BENCH_INGRESS_URL")),
            FakeUpstreamUrl = new Uri(Required("BENCH_FAKE_URL")),
            PortkeyUrl = Optional("BENCH_PORTKEY_URL") is { } portkey ? new Uri(portkey) : null,
            AdminToken = Required("Auth__AdminToken"),
            MongoUri = Optional("BENCH_MONGO_URI"),
            MongoDatabase = Optional("BENCH_MONGO_DATABASE") ?? "addonevents",
            Collections = List("BENCH_COLLECTIONS", []),
            RabbitMqPort = (int)Number("BENCH_RABBITMQ_PORT", 0),
            RabbitMqManagementPort = (int)Number("BENCH_RABBITMQ_MGMT_PORT", 0),
            Processes = List("BENCH_PIDS", [])
                .Select(entry => entry.Split('=', 2))
                .Where(parts => parts.Length == 2 && int.TryParse(parts[1], CultureInfo.InvariantCulture, out _))
                .Select(parts => (parts[0], int.Parse(parts[1], CultureInfo.InvariantCulture)))
                .ToList(),
            OutputDirectory = Optional("BENCH_OUT") ?? ".run/bench",
            PlotPath = Optional("BENCH_PLOT") ?? "docs/benchmarks/overhead.png",
            Users = (int)Number("BENCH_USERS", 1000),
            IdleUsers = (int)Number("BENCH_IDLE_USERS", 10_000),
            Rates = List("BENCH_RATES", ["10", "25", "50", "75", "100", "250", "500", "1000", "2000"])
                .Select(rate => double.Parse(rate, CultureInfo.InvariantCulture)).ToList(),
            TargetRate = Number("BENCH_TARGET_RATE", 500),
            StepDuration = TimeSpan.FromSeconds(Number("BENCH_STEP_SECONDS", 12)),
            DrainTimeout = TimeSpan.FromSeconds(Number("BENCH_DRAIN_SECONDS", 10)),
            Modes = List("BENCH_MODES", [Mode.Direct, Mode.SignalR, Mode.OpenAiEndpoint, Mode.Portkey, Mode.BusFloor]),
            StreamRate = Number("BENCH_STREAM_RATE", 20),
            StreamDuration = TimeSpan.FromSeconds(Number("BENCH_STREAM_SECONDS", 8)),
            HopDuration = TimeSpan.FromSeconds(Number("BENCH_HOP_SECONDS", 8)),
            HopRates = List("BENCH_HOP_RATES", ["25", "50"]).Select(rate => double.Parse(rate, CultureInfo.InvariantCulture)).ToList(),
            UpstreamLatencyMs = Number("BENCH_LATENCY_MS", 50),
            PiecesPerSecond = Number("BENCH_PIECES_PER_SECOND", 100),
            Concurrency = (ushort)Number("BENCH_CONCURRENCY", 256),
            BusFloorQueueType = BusQueueType(),
            ServiceSettings = Optional("BENCH_SERVICE_SETTINGS") ?? "",
        };
    }

    private static string BusQueueType()
    {
        string queueType = Optional("BENCH_BUS_QUEUE") ?? "quorum";
        return queueType is "quorum" or "classic"
            ? queueType
            : throw new InvalidOperationException($"BENCH_BUS_QUEUE '{queueType}' is invalid. Set it to quorum or classic.");
    }

    private static string Required(string name) =>
        Optional(name) ?? throw new InvalidOperationException($"{name} is not set; start the benchmark with ./bench.sh.");

    private static string? Optional(string name) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } value ? value : null;

    private static double Number(string name, double fallback) =>
        Optional(name) is { } text ? double.Parse(text, CultureInfo.InvariantCulture) : fallback;

    private static List<string> List(string name, List<string> fallback) =>
        Optional(name) is { } text
            ? text.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList()
            : fallback;
}

/// <summary>The four ways a prompt reaches the fake upstream.</summary>
public static class Mode
{
    public const string Direct = "direct";
    public const string SignalR = "signalr";
    public const string OpenAiEndpoint = "v1";
    public const string Portkey = "portkey";
    public const string BusFloor = "bus";

    public static string Describe(string mode) => mode switch
    {
        Direct => "Fake upstream, direct (floor)",
        SignalR => "AddOnEvents, SignalR hub",
        OpenAiEndpoint => "AddOnEvents, /v1/chat/completions",
        Portkey => "Portkey gateway 1.15.2",
        BusFloor => "Broker hops alone (no Ingress, database or upstream)",
        _ => mode,
    };
}
