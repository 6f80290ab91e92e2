using System.Globalization;
using System.Runtime.InteropServices;

namespace AddOnEvents.Bench;

/// <summary>CPU time and resident memory of one process, read from /proc.</summary>
public readonly record struct ProcessSample(long CpuTicks, long RssBytes);

/// <summary>CPU use and RSS of each process over one phase, plus the machine's busy time not spent in them.</summary>
public sealed record PhaseUsage(
    TimeSpan Duration,
    IReadOnlyList<(string Name, double CpuPercent, double RssMb)> Processes,
    double MachineCpuPercent,
    double OtherCpuPercent,
    string LoadAverage);

/// <summary>Reads /proc/PID/stat and /proc/PID/status before and after a phase.</summary>
public sealed partial class ProcessMeter(IReadOnlyList<(string Name, int Pid)> processes)
{
    private static readonly long TicksPerSecond = ReadTicksPerSecond();

    public Snapshot Take()
    {
        var samples = processes.Select(p => Read(p.Pid)).ToArray();
        return new Snapshot(DateTime.UtcNow, samples, ReadMachine());
    }

    public PhaseUsage Usage(Snapshot before, Snapshot after)
    {
        var duration = after.At - before.At;
        double seconds = Math.Max(duration.TotalSeconds, 0.001);
        var rows = new List<(string, double, double)>();
        double ours = 0;
        for (int index = 0; index < processes.Count; index++)
        {
            var (a, b) = (before.Samples[index], after.Samples[index]);
            double cpu = a is { } start && b is { } end ? 100.0 * (end.CpuTicks - start.CpuTicks) / TicksPerSecond / seconds : double.NaN;
            double rss = b is { } last ? last.RssBytes / 1048576.0 : double.NaN;
            if (!double.IsNaN(cpu))
            {
                ours += cpu;
            }

            rows.Add((processes[index].Name, cpu, rss));
        }

        var (busyBefore, totalBefore) = before.Machine;
        var (busyAfter, totalAfter) = after.Machine;
        long totalDelta = Math.Max(1, totalAfter - totalBefore);

        // Machine busy time in percent of one core, so it adds up with the per-process figures.
        double machine = 100.0 * Environment.ProcessorCount * (busyAfter - busyBefore) / totalDelta;
        return new PhaseUsage(duration, rows, machine, Math.Max(0, machine - ours), ReadLoadAverage());
    }

    public static ProcessSample? Read(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");

            // The command name in parentheses may contain spaces, so fields are counted after the last ')'.
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            long utime = long.Parse(fields[11], CultureInfo.InvariantCulture);
            long stime = long.Parse(fields[12], CultureInfo.InvariantCulture);
            long rssKb = 0;
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    rssKb = long.Parse(line["VmRSS:".Length..].Replace("kB", "", StringComparison.Ordinal).Trim(), CultureInfo.InvariantCulture);
                    break;
                }
            }

            return new ProcessSample(utime + stime, rssKb * 1024);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }

    public static string ReadLoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "?";
        }
    }

    private static (long Busy, long Total) ReadMachine()
    {
        string first = File.ReadLines("/proc/stat").First();
        long[] values = first.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Select(v => long.Parse(v, CultureInfo.InvariantCulture)).ToArray();

        // user nice system idle iowait irq softirq steal; guest time is already counted in user.
        long idle = values[3] + values[4];
        long total = values.Take(8).Sum();
        return (total - idle, total);
    }

    private static long ReadTicksPerSecond()
    {
        long ticks = SysConf(2);
        return ticks > 0 ? ticks : 100;
    }

    [LibraryImport("libc", EntryPoint = "sysconf")]
    private static partial long SysConf(int name);

    public sealed record Snapshot(DateTime At, ProcessSample?[] Samples, (long Busy, long Total) Machine);
}
