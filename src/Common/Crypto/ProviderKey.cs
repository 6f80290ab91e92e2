using System.Text.Json;
using System.Text.Json.Serialization;

namespace AddOnEvents.Common.Crypto;

/// <summary>
/// A plaintext provider API key held in memory. It prints as redacted from <see cref="ToString"/>, refuses JSON
/// serialization, and <see cref="Dispose"/> zeroes its buffer, so an accidental log call or serialized object
/// cannot carry the key.
/// </summary>
[JsonConverter(typeof(ProviderKeyJsonConverter))]
public sealed class ProviderKey : IDisposable
{
    private readonly char[] _chars;
    private bool _disposed;

    public ProviderKey(ReadOnlySpan<char> value)
    {
        _chars = value.ToArray();
    }

    public int Length => _chars.Length;

    /// <summary>Returns a new string with the key; the caller hands it straight to the upstream client.</summary>
    public string Reveal()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new string(_chars);
    }

    public ReadOnlySpan<char> AsSpan()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _chars;
    }

    /// <summary>Returns the masked form shown in the console: the first 3 and the last 4 characters.</summary>
    public string Hint()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _chars.Length < 12
            ? "..." + new string(_chars, Math.Max(0, _chars.Length - 2), Math.Min(2, _chars.Length))
            : new string(_chars, 0, 3) + "..." + new string(_chars, _chars.Length - 4, 4);
    }

    public override string ToString() => "[redacted provider key]";

    public void Dispose()
    {
        Array.Clear(_chars);
        _disposed = true;
    }

    private sealed class ProviderKeyJsonConverter : JsonConverter<ProviderKey>
    {
        public override ProviderKey Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            throw new JsonException("A provider key cannot be read from JSON through this type.");

        public override void Write(Utf8JsonWriter writer, ProviderKey value, JsonSerializerOptions options) =>
            writer.WriteStringValue("[redacted provider key]");
    }
}
