namespace AddOnEvents.Ingress.Prompts;

/// <summary>
/// Puts the pieces of one streamed answer back in sequence order. The broker consumer hands messages to the
/// partitioner from several threads, so two pieces of one answer can reach a reader in swapped order.
/// </summary>
public sealed class PieceOrder
{
    private readonly Dictionary<int, string> _held = [];
    private int _next;

    /// <summary>Characters of the answer released so far, all from pieces in order.</summary>
    public int ReleasedCharacters { get; private set; }

    /// <summary>
    /// Takes a piece and returns the text that is now ready in order, which is empty while an earlier piece is
    /// missing. A piece seen before, or older than the released text, is a duplicate and yields nothing.
    /// </summary>
    public string Accept(int sequence, string text)
    {
        if (sequence < _next || !_held.TryAdd(sequence, text))
        {
            return "";
        }

        string ready = "";
        while (_held.Remove(_next, out string? next))
        {
            ready += next;
            _next++;
        }

        ReleasedCharacters += ready.Length;
        return ready;
    }

    /// <summary>
    /// The part of the final answer that the released pieces did not carry. Held pieces behind a gap are dropped,
    /// because the final answer holds their text in the right place.
    /// </summary>
    public string Remainder(string finalText)
    {
        _held.Clear();
        return finalText.Length > ReleasedCharacters ? finalText[ReleasedCharacters..] : "";
    }
}
