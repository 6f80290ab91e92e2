using System.Globalization;

namespace AddOnEvents.Drill;

/// <summary>A fault the drill triggers at a time after the traffic started, through the fault command.</summary>
public sealed record FaultStep(string Name, TimeSpan At);

/// <summary>What the drill sends and when it triggers faults; read from DRILL_* environment variables.</summary>
public sealed record DrillSettings
{
    public required Uri Ingress { get; init; }

    public required string AdminToken { get; init; }

    /// <summary>End users, each with one SignalR connection that receives the results of its own prompts.</summary>
    public int Users { get; init; } = 10;

    /// <summary>Prompts per second across all users, sent open-loop: a slow answer never delays the next send.</summary>
    public double Rate { get; init; } = 20;

    /// <summary>How long prompts and key replacements are sent.</summary>
    public TimeSpan SendDuration { get; init; } = TimeSpan.FromSeconds(150);

    public TimeSpan KeyInterval { get; init; } = TimeSpan.FromSeconds(4);

    /// <summary>After sending stops: how long to wait for the last results before counting what is missing.</summary>
    public TimeSpan Drain { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Asks for streamed answers, which add PromptPiece messages and end with the same final result.</summary>
    public bool Stream { get; init; }

    public IReadOnlyList<FaultStep> Faults { get; init; } = [];

    /// <summary>Shell command that performs a fault; the drill appends the fault's name as its one argument.</summary>
    public string? FaultCommand { get; init; }

    /// <summary>Free text for the report: what the drill runs against.</summary>
    public string Setup { get; init; } = "";

    public static DrillSettings FromEnvironment()
    {
        string Required(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } value
            ? value
            : throw new FormatException($"{name} is not set.");

        double Number(string name, double fallback, double min)
        {
            string? text = Environment.GetEnvironmentVariable(name);
            if (string.IsNullOrWhiteSpace(text))
            {
                return fallback;
            }

            return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && value >= min
                ? value
                : throw new FormatException($"{name} must be a number of at least {min.ToString(CultureInfo.InvariantCulture)}, not '{text}'.");
        }

        return new DrillSettings
        {
            Ingress = new Uri(Required("DRILL_INGRESS_URL")),
            AdminToken = Required("DRILL_ADMIN_TOKEN"),
            Users = (int)Number("DRILL_USERS", 10, 1),
            Rate = Number("DRILL_RATE", 20, 0.1),
            SendDuration = TimeSpan.FromSeconds(Number("DRILL_SEND_SECONDS", 150, 1)),
            KeyInterval = TimeSpan.FromSeconds(Number("DRILL_KEY_INTERVAL_SECONDS", 4, 0.5)),
            Drain = TimeSpan.FromSeconds(Number("DRILL_DRAIN_SECONDS", 60, 1)),
            Stream = Environment.GetEnvironmentVariable("DRILL_STREAM") is "1" or "true",
            Faults = ParseFaults(Environment.GetEnvironmentVariable("DRILL_FAULTS")),
            FaultCommand = Environment.GetEnvironmentVariable("DRILL_FAULT_COMMAND"),
            Setup = Environment.GetEnvironmentVariable("DRILL_SETUP") ?? "",
        };
    }

    /// <summary>Reads "name@seconds,name@seconds", for example "stop-leader@25,start-node@70".</summary>
    public static IReadOnlyList<FaultStep> ParseFaults(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return [];
        }

        var steps = new List<FaultStep>();
        foreach (string entry in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            string[] parts = entry.Split('@');
            if (parts.Length != 2 || parts[0].Length == 0
                || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) || seconds < 0)
            {
                throw new FormatException($"DRILL_FAULTS entry '{entry}' is not name@seconds.");
            }

            steps.Add(new FaultStep(parts[0], TimeSpan.FromSeconds(seconds)));
        }

        return [.. steps.OrderBy(s => s.At)];
    }
}
