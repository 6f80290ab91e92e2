await AddOnEvents.Ingress.IngressApp.Build(args).RunAsync();
