using System.Text;

namespace AddOnEvents.Ingress.Prompts;

/// <summary>
/// Puts the pieces of one streamed answer back in sequence order. The broker consumer hands messages to the
/// partitioner from several threads, so two pieces of one answer can reach a reader in swapped order. It also
/// notices when the answer restarted in a new run after text of an earlier run was released.
/// </summary>
public sealed class PieceOrder
{
    private readonly Dictionary<int, string> _held = [];
    private readonly StringBuilder _released = new();
    private int _attempt;
    private int _next;

    /// <summary>
    /// True once a piece of a newer run arrived after text of an older run was released. The released text cannot
    /// be taken back, so the reader ends the answer with an error instead of joining two runs.
    /// </summary>
    public bool Restarted { get; private set; }

    /// <summary>
    /// Takes a piece and returns the text that is now ready in order, which is empty while an earlier piece is
    /// missing. A piece seen before, older than the released text, or of an older run yields nothing.
    /// </summary>
    public string Accept(int attempt, int sequence, string text)
    {
        if (Restarted || attempt < _attempt)
        {
            return "";
        }

        if (attempt > _attempt)
        {
            if (_released.Length > 0)
            {
                Restarted = true;
                return "";
            }

            // Nothing of the older run was released, so the newer run simply replaces it.
            _attempt = attempt;
            _held.Clear();
            _next = 0;
        }

        if (sequence < _next || !_held.TryAdd(sequence, text))
        {
            return "";
        }

        int start = _released.Length;
        while (_held.Remove(_next, out string? next))
        {
            _released.Append(next);
            _next++;
        }

        return _released.ToString(start, _released.Length - start);
    }

    /// <summary>
    /// Returns the part of the final answer that the released pieces did not carry, or null when the final answer
    /// does not continue the released text, because it came from another run. Held pieces behind a gap are dropped,
    /// because the final answer contains their text in the right place.
    /// </summary>
    public string? Remainder(string finalText)
    {
        _held.Clear();
        if (Restarted || !finalText.AsSpan().StartsWith(_released.ToString(), StringComparison.Ordinal))
        {
            return null;
        }

        return finalText[_released.Length..];
    }
}
