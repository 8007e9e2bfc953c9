"""The one exception-group policy: a nursery's group comes out as the error that caused it."""

from __future__ import annotations

import pytest
import trio

from ozw.exception_groups import cause, collapsed, leaves


async def fail_beside_a_sleeper(error: BaseException) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)
        await trio.lowlevel.checkpoint()
        raise error


async def test_a_nurserys_failure_comes_out_alone_with_its_own_cause() -> None:
    try:
        raise OSError("the root cause")
    except OSError as root:
        error = ConnectionError("cannot reach proxy")
        error.__cause__ = root
    with pytest.raises(ConnectionError) as caught, collapsed():
        await fail_beside_a_sleeper(error)
    assert caught.value is error
    assert isinstance(caught.value.__cause__, OSError)
    assert not isinstance(caught.value.__context__, BaseExceptionGroup)


async def test_a_cancelled_nursery_is_left_to_its_cancel_scope() -> None:
    with trio.CancelScope() as scope, collapsed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught


def test_ctrl_c_anywhere_is_the_cause_else_the_first_real_leaf() -> None:
    first, second = ValueError("first"), KeyError("second")
    nested = ExceptionGroup("outer", [first, ExceptionGroup("inner", [second])])
    assert list(leaves(nested)) == [first, second]
    assert cause(nested) is first
    interrupt = KeyboardInterrupt()
    assert (
        cause(BaseExceptionGroup("g", [first, BaseExceptionGroup("h", [interrupt])])) is interrupt
    )
    assert cause(first) is first
