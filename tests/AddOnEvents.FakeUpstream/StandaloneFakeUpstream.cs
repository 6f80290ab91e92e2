using System.Globalization;
using System.Runtime.InteropServices;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>Runs a <see cref="FakeUpstream"/> as a process of its own until SIGTERM or SIGINT, for benchmarks.</summary>
public static class StandaloneFakeUpstream
{
    public const string Usage =
        "fake-upstream [--host 127.0.0.1] [--port 0] [--latency-ms 0] [--pieces-per-second 0] [--accept-any-key] [--report-timing]";

    /// <summary>Line printed on standard output once the fake accepts connections, followed by its base URL.</summary>
    public const string ReadyPrefix = "FAKE_UPSTREAM_URL=";

    public static async Task<int> RunAsync(IReadOnlyList<string> args)
    {
        FakeUpstreamOptions options;
        try
        {
            options = Parse(args);
        }
        catch (FormatException ex)
        {
            await Console.Error.WriteLineAsync($"{ex.Message}\nusage: {Usage}");
            return 2;
        }

        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);

        await using var upstream = await FakeUpstream.StartAsync(options);
        Console.WriteLine(ReadyPrefix + upstream.BaseUrl);
        await stop.Task;
        return 0;

        void Stop(PosixSignalContext context)
        {
            context.Cancel = true;
            stop.TrySetResult();
        }
    }

    private static FakeUpstreamOptions Parse(IReadOnlyList<string> args)
    {
        var options = new FakeUpstreamOptions { RecordRequests = false };
        for (int index = 0; index < args.Count; index++)
        {
            string Value() => index + 1 < args.Count ? args[++index] : throw new FormatException($"{args[index]} needs a value.");
            double Number() => double.TryParse(Value(), NumberStyles.Float, CultureInfo.InvariantCulture, out double number) && number >= 0
                ? number
                : throw new FormatException($"{args[index]} needs a number of at least 0.");

            options = args[index] switch
            {
                "--host" => options with { Host = Value() },
                "--port" => options with { Port = (int)Number() },
                "--latency-ms" => options with { Latency = TimeSpan.FromMilliseconds(Number()) },
                "--pieces-per-second" => options with { PiecesPerSecond = Number() },
                "--accept-any-key" => options with { AcceptAnyKey = true },
                "--report-timing" => options with { ReportTiming = true },
                _ => throw new FormatException($"Unknown option {args[index]}."),
            };
        }

        return options;
    }
}
