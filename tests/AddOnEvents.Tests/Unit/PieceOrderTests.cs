using AddOnEvents.Ingress.Prompts;

namespace AddOnEvents.Tests.Unit;

public sealed class PieceOrderTests
{
    [Fact]
    public void SwappedPiecesAreReleasedInOrder()
    {
        var order = new PieceOrder();

        Assert.Equal("a ", order.Accept(0, "a "));
        Assert.Equal("", order.Accept(2, "c "));
        Assert.Equal("", order.Accept(3, "d "));
        Assert.Equal("b c d ", order.Accept(1, "b "));
        Assert.Equal(8, order.ReleasedCharacters);
    }

    [Fact]
    public void RepeatedPieceIsDropped()
    {
        var order = new PieceOrder();
        order.Accept(0, "a ");
        order.Accept(2, "c ");

        Assert.Equal("", order.Accept(0, "a "));
        Assert.Equal("", order.Accept(2, "c "));
        Assert.Equal("b c ", order.Accept(1, "b "));
    }

    [Fact]
    public void RemainderSkipsHeldPiecesBehindAGap()
    {
        var order = new PieceOrder();
        order.Accept(0, "a ");
        order.Accept(2, "c ");

        Assert.Equal("b c d ", order.Remainder("a b c d "));
    }

    [Fact]
    public void RemainderOfFullyReleasedAnswerIsEmpty()
    {
        var order = new PieceOrder();
        order.Accept(0, "a ");
        order.Accept(1, "b ");

        Assert.Equal("", order.Remainder("a b "));
        Assert.Equal("a b ", new PieceOrder().Remainder("a b "));
    }
}
