await AddOnEvents.PromptWorker.PromptWorkerApp.Build(args).RunAsync();
