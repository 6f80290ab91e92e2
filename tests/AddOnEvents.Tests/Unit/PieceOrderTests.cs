using AddOnEvents.Ingress.Prompts;

namespace AddOnEvents.Tests.Unit;

public sealed class PieceOrderTests
{
    [Fact]
    public void SwappedPiecesAreReleasedInOrder()
    {
        var order = new PieceOrder();

        Assert.Equal("a ", order.Accept(1, 0, "a "));
        Assert.Equal("", order.Accept(1, 2, "c "));
        Assert.Equal("", order.Accept(1, 3, "d "));
        Assert.Equal("b c d ", order.Accept(1, 1, "b "));
        Assert.False(order.Restarted);
    }

    [Fact]
    public void RepeatedPieceIsDropped()
    {
        var order = new PieceOrder();
        order.Accept(1, 0, "a ");
        order.Accept(1, 2, "c ");

        Assert.Equal("", order.Accept(1, 0, "a "));
        Assert.Equal("", order.Accept(1, 2, "c "));
        Assert.Equal("b c ", order.Accept(1, 1, "b "));
    }

    [Fact]
    public void RemainderSkipsHeldPiecesBehindAGap()
    {
        var order = new PieceOrder();
        order.Accept(1, 0, "a ");
        order.Accept(1, 2, "c ");

        Assert.Equal("b c d ", order.Remainder("a b c d "));
    }

    [Fact]
    public void RemainderOfFullyReleasedAnswerIsEmpty()
    {
        var order = new PieceOrder();
        order.Accept(1, 0, "a ");
        order.Accept(1, 1, "b ");

        Assert.Equal("", order.Remainder("a b "));
        Assert.Equal("a b ", new PieceOrder().Remainder("a b "));
    }

    [Fact]
    public void NewerRunAfterReleasedTextRestarts()
    {
        var order = new PieceOrder();
        order.Accept(1, 0, "first run ");

        Assert.Equal("", order.Accept(3, 0, "second "));
        Assert.True(order.Restarted);
        Assert.Equal("", order.Accept(3, 1, "run "));
        Assert.Null(order.Remainder("second run "));
    }

    [Fact]
    public void NewerRunBeforeReleasedTextReplacesHeldPieces()
    {
        var order = new PieceOrder();
        order.Accept(1, 1, "held ");

        Assert.Equal("second ", order.Accept(2, 0, "second "));
        Assert.Equal("run ", order.Accept(2, 1, "run "));
        Assert.False(order.Restarted);
        Assert.Equal("", order.Remainder("second run "));
    }

    [Fact]
    public void OlderRunIsIgnored()
    {
        var order = new PieceOrder();
        order.Accept(2, 0, "second ");

        Assert.Equal("", order.Accept(1, 1, "first "));
        Assert.False(order.Restarted);
        Assert.Equal("run ", order.Remainder("second run "));
    }

    [Fact]
    public void FinalAnswerOfAnotherRunHasNoRemainder()
    {
        var order = new PieceOrder();
        order.Accept(1, 0, "first run ");

        Assert.Null(order.Remainder("second run, taken over "));
    }
}
