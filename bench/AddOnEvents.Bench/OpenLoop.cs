using System.Diagnostics;
using System.Runtime.InteropServices;

namespace AddOnEvents.Bench;

/// <summary>A way to send one prompt. Send must return quickly: it starts the request and never waits for the answer.</summary>
public interface ILoadTarget
{
    string Mode { get; }

    void Send(LoadStep load, long sequence, long dueTimestamp);
}

/// <summary>
/// Sends at fixed intervals whatever the answers do (open loop), so a slow answer cannot delay later sends and
/// hide latency (coordinated omission). Latency counts from the scheduled time, not from the actual send.
/// </summary>
public static partial class OpenLoop
{
    public static Task RunAsync(ILoadTarget target, LoadStep step, double rate, TimeSpan duration, long firstSequence = 0)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        long count = (long)Math.Round(rate * duration.TotalSeconds);
        double interval = Stopwatch.Frequency / rate;
        var thread = new Thread(() =>
        {
            try
            {
                long start = Stopwatch.GetTimestamp();
                step.StartTimestamp = start;
                for (long index = 0; index < count; index++)
                {
                    long due = start + (long)(index * interval);
                    WaitUntil(due);
                    target.Send(step, firstSequence + index, due);
                }

                done.SetResult();
            }
            catch (Exception ex)
            {
                done.SetException(ex);
            }
        })
        {
            IsBackground = true,
            Name = "open-loop " + target.Mode,
            Priority = ThreadPriority.AboveNormal,
        };
        thread.Start();
        return done.Task;
    }

    /// <summary>Sleeps in steps of at most 1 ms with usleep, which wakes within ~60 µs here, unlike Thread.Sleep's 1 ms ticks.</summary>
    private static void WaitUntil(long due)
    {
        while (true)
        {
            long remaining = due - Stopwatch.GetTimestamp();
            if (remaining <= 0)
            {
                return;
            }

            long micros = remaining * 1_000_000 / Stopwatch.Frequency;
            _ = Usleep((uint)Math.Clamp(micros, 1, 1000));
        }
    }

    [LibraryImport("libc", EntryPoint = "usleep")]
    private static partial int Usleep(uint microseconds);
}
