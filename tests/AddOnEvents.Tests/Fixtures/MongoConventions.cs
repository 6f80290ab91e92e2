using System.Runtime.CompilerServices;
using AddOnEvents.Common.Storage;

namespace AddOnEvents.Tests.Fixtures;

internal static class MongoConventions
{
    /// <summary>
    /// Registers the stores' conventions when the test assembly loads. The services run in this process and share its
    /// class maps, and a test that builds a map first, with a store of its own, would fix the element names for all of
    /// them: the services would then store "Reserved" where the tests read "reserved".
    /// </summary>
    [ModuleInitializer]
    internal static void Register() => MongoSetup.RegisterConventions();
}
