using System.Globalization;
using System.Text;

namespace AddOnEvents.Drill;

/// <summary>
/// What the users saw around one fault: when the first answer came for a prompt sent after the fault took effect,
/// and the longest time without any answer pushed between this fault and the next.
/// </summary>
public sealed record FaultWindow(
    FaultRun Fault, TimeSpan? FirstSuccessAfter, TimeSpan LongestGap, TimeSpan GapEndedAfter, int Rejected, int FetchedOnly);

public sealed class DrillOutcome
{
    public int Sent { get; init; }

    public int Accepted { get; init; }

    public IReadOnlyDictionary<string, int> Rejected { get; init; } = new Dictionary<string, int>();

    /// <summary>"completed" or "failed: CODE" of each accepted prompt that has a final result.</summary>
    public List<string> Finals { get; } = [];

    /// <summary>Accepted prompts whose result came only through GET, because its push did not arrive.</summary>
    public List<SentPrompt> FetchedOnly { get; } = [];

    /// <summary>Accepted prompts without any final result, with the last status GET returned for them.</summary>
    public List<(SentPrompt Prompt, string LastGet)> Lost { get; } = [];

    /// <summary>Accepted prompts whose final result was pushed more than once.</summary>
    public List<SentPrompt> Duplicated { get; } = [];

    public int Misrouted { get; set; }

    /// <summary>Results for request ids that Ingress never accepted, such as a publish that timed out but got through.</summary>
    public int Unsolicited { get; set; }

    public int Disconnects { get; init; }

    public required KeyFigures Keys { get; init; }

    public IReadOnlyList<FaultRun> Faults { get; init; } = [];

    public IReadOnlyList<FaultWindow> Windows { get; set; } = [];

    public IEnumerable<string> Failures()
    {
        if (Lost.Count > 0)
        {
            yield return $"{Lost.Count} accepted prompts got no final result";
        }

        if (Duplicated.Count > 0)
        {
            yield return $"{Duplicated.Count} accepted prompts got more than one final result";
        }

        if (Misrouted > 0)
        {
            yield return $"{Misrouted} answers reached the wrong user or answered another prompt";
        }

        if (Keys.NotStored > 0)
        {
            yield return $"{Keys.NotStored} accepted key registrations were not stored";
        }

        foreach (var fault in Faults.Where(f => f.ExitCode != 0))
        {
            yield return $"the fault {fault.Name} failed (exit code {fault.ExitCode}): {fault.Description}";
        }

        if (Accepted == 0)
        {
            yield return "no prompt was accepted";
        }
    }

    public bool Passed => !Failures().Any();
}

public static class DrillReport
{
    public static string Text(DrillSettings settings, DrillOutcome o)
    {
        var text = new StringBuilder();
        void Line(string line) => text.AppendLine(line);
        string Seconds(TimeSpan t) => t.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture) + " s";
        string List(IEnumerable<KeyValuePair<string, int>> counts) =>
            string.Join(", ", counts.OrderByDescending(c => c.Value).Select(c => $"{c.Key}: {c.Value}"));

        Line("## Cluster drill results");
        Line("");
        if (settings.Setup.Length > 0)
        {
            Line(settings.Setup);
            Line("");
        }

        Line($"Traffic: {settings.Users} SignalR users, {settings.Rate.ToString(CultureInfo.InvariantCulture)} prompts/s "
            + $"({(settings.Stream ? "streamed" : "not streamed")}) for {Seconds(settings.SendDuration)}, a key replacement every "
            + $"{Seconds(settings.KeyInterval)}; up to {Seconds(settings.Drain)} to collect the last results.");
        Line("");
        Line("| Prompts | Count |");
        Line("| --- | ---: |");
        Line($"| sent | {o.Sent} |");
        Line($"| accepted (202) | {o.Accepted} |");
        Line($"| not accepted | {o.Rejected.Values.Sum()}{(o.Rejected.Count > 0 ? $" ({List(o.Rejected)})" : "")} |");
        int completed = o.Finals.Count(f => f == "completed");
        var failed = o.Finals.Where(f => f != "completed").GroupBy(f => f).ToDictionary(g => g.Key[8..], g => g.Count());
        Line($"| accepted, completed | {completed} |");
        Line($"| accepted, failed | {failed.Values.Sum()}{(failed.Count > 0 ? $" ({List(failed)})" : "")} |");
        Line($"| accepted, final result only through GET (push missed) | {o.FetchedOnly.Count} |");
        Line($"| duplicated (more than one final result) | {o.Duplicated.Count} |");
        Line($"| lost (accepted, no final result) | {o.Lost.Count} |");
        Line($"| answers to the wrong user or prompt | {o.Misrouted} |");
        Line($"| results for requests not accepted | {o.Unsolicited} |");
        Line($"| SignalR reconnects | {o.Disconnects} |");
        Line("");
        Line("| Key registrations | Count |");
        Line("| --- | ---: |");
        Line($"| accepted (202) | {o.Keys.Accepted} |");
        Line($"| stored (checked and active) | {o.Keys.Stored} |");
        Line($"| accepted, not stored | {o.Keys.NotStored} |");
        Line($"| not accepted | {o.Keys.Rejected.Values.Sum()}{(o.Keys.Rejected.Count > 0 ? $" ({List(o.Keys.Rejected)})" : "")} |");
        Line($"| slowest from 202 to stored | {Seconds(o.Keys.SlowestStore)} |");
        Line("");
        if (o.Windows.Count > 0)
        {
            Line("| Fault (at, took) | What it did | Recovered: first answer after it | Longest time without answers (ended at) | Not accepted | Push missed |");
            Line("| --- | --- | ---: | ---: | ---: | ---: |");
            foreach (var w in o.Windows)
            {
                Line($"| {w.Fault.Name} ({Seconds(w.Fault.StartedAt)}, {Seconds(w.Fault.EndedAt - w.Fault.StartedAt)}) | {w.Fault.Description} | "
                    + $"{(w.FirstSuccessAfter is { } first ? Seconds(first) : "none")} | {Seconds(w.LongestGap)} ({Seconds(w.GapEndedAfter)}) | "
                    + $"{w.Rejected} | {w.FetchedOnly} |");
            }

            Line("");
            Line("Times in the fault table count from the start of the fault's command. \"First answer\" is the first pushed "
                + "answer to a prompt sent after the command returned; \"longest time without answers\" covers the time from the "
                + "fault to the next one (or the end).");
            Line("");
        }

        foreach (var prompt in o.Duplicated.Take(10))
        {
            Line($"duplicated: request {prompt.RequestId} (user {prompt.User}, sent at {Seconds(prompt.SentAt)})");
        }

        foreach (var (prompt, lastGet) in o.Lost.Take(10))
        {
            Line($"lost: request {prompt.RequestId} (user {prompt.User}, sent at {Seconds(prompt.SentAt)}); GET said {lastGet}");
        }

        var failures = o.Failures().ToList();
        Line(failures.Count == 0
            ? $"PASS: every one of the {o.Accepted} prompts accepted with 202 got exactly one final result; nothing was lost."
            : "FAIL: " + string.Join("; ", failures) + ".");
        return text.ToString();
    }
}
