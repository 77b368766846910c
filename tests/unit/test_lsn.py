import pytest

from connector.core.lsn import Lsn


def test_round_trip_and_order() -> None:
    lsn = Lsn.parse("16/B374D848")
    assert lsn.value == (0x16 << 32) | 0xB374D848
    assert str(lsn) == "16/B374D848"
    assert Lsn.parse("0/10") < Lsn.parse("0/11") < Lsn.parse("1/0")


@pytest.mark.parametrize("text", ["", "16", "/1", "1/", "x/1", "1/2/3"])
def test_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="LSN"):
        Lsn.parse(text)
