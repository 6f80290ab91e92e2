namespace AddOnEvents.Contracts;

/// <summary>States of an app's OpenAI key as the console shows them.</summary>
public static class KeyStates
{
    /// <summary>Accepted by Ingress, not yet handled by KeyWorker.</summary>
    public const string Pending = "pending";

    /// <summary>Stored and accepted by the provider.</summary>
    public const string Active = "active";

    /// <summary>Rejected by the provider or by the upstream during a prompt; prompts fail with key_invalid.</summary>
    public const string Invalid = "invalid";

    /// <summary>Stored, but the provider could not be reached to check it; prompts still use it.</summary>
    public const string Unverified = "unverified";
}
