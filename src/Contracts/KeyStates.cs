namespace AddOnEvents.Contracts;

/// <summary>States of an app's OpenAI key as the console shows them.</summary>
public static class KeyStates
{
    /// <summary>Accepted by Ingress, not yet handled by KeyWorker.</summary>
    public const string Pending = "pending";

    /// <summary>Stored and accepted by the provider.</summary>
    public const string Active = "active";

    /// <summary>
    /// Rejected by the provider or by the upstream during a prompt. Prompts fail with key_invalid, unless a previous
    /// key of the app is still stored. That key keeps serving until a replacement is stored.
    /// </summary>
    public const string Invalid = "invalid";

    /// <summary>
    /// Stored, but the provider could not be reached to check it. Prompts use it, and KeyWorker checks it again a
    /// few times with growing delays before it stops with reason key_check_abandoned.
    /// </summary>
    public const string Unverified = "unverified";
}
