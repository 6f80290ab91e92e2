using AddOnEvents.KeyWorker;
using AddOnEvents.KeyWorker.Keys;

if (args.Length > 0 && args[0] == "rotate-master-key")
{
    // Rewraps every stored data key under MasterKeys:CurrentKeyId; the older master keys stay configured until
    // this reports zero failures, then they can be removed.
    using var host = KeyWorkerApp.BuildCommandHost(args[1..]);
    await host.StartAsync();
    var result = await host.Services.GetRequiredService<MasterKeyRotation>().RunAsync(CancellationToken.None);
    Console.WriteLine($"rewrapped={result.Rewrapped} skipped={result.Skipped} failed={result.Failed}");
    await host.StopAsync();
    return result.Failed == 0 ? 0 : 1;
}

await KeyWorkerApp.Build(args).RunAsync();
return 0;
