"""Step and sigma windows of timed patches."""

import pytest

from fewstep.window import (
    Window,
    active_steps,
    check_step,
    check_window,
    empty_window_message,
    percent_to_sigma,
    step_of_sigma,
)

SCHEDULE = [14.6, 4.5, 1.96, 1.0, 0.5, 0.13]  # five steps


def test_steps_resolution():
    assert list(Window(1, -1).steps(5)) == [1, 2, 3, 4, 5]
    assert list(Window(2, 4).steps(5)) == [2, 3, 4]
    assert list(Window(-3, -1).steps(5)) == [3, 4, 5]  # the last three steps
    assert list(Window(6, 6).steps(6)) == [6]
    assert list(Window(7, 9).steps(6)) == []
    assert list(Window(4, 2).steps(6)) == []


def test_step_of_sigma():
    assert [step_of_sigma(s, SCHEDULE) for s in SCHEDULE] == [1, 2, 3, 4, 5, 5]  # final denoise: last step
    assert step_of_sigma(14.6 * (1 + 1e-6), SCHEDULE) == 1
    assert step_of_sigma(4.5 * (1 - 1e-6), SCHEDULE) == 2  # float32 round-off of the same sigma
    assert step_of_sigma(3.0, SCHEDULE) == 2  # an intermediate evaluation inside step 2


def test_active():
    w = Window(2, 3)
    assert [w.active(s, SCHEDULE) for s in SCHEDULE[:-1]] == [False, True, True, False, False]
    assert [Window(1, -1, sigma_high=2.0, sigma_low=0.6).active(s, SCHEDULE) for s in SCHEDULE[:-1]] == \
        [False, False, True, True, False]


def test_step_window_without_schedule_is_a_clear_error():
    assert Window().active(1.0, None)  # the default window needs no schedule
    with pytest.raises(RuntimeError, match="Few-Step DPM\\+\\+ Sampler"):
        Window(2, 3).active(1.0, None)


def test_check_step():
    assert check_step("first_step", 0).startswith("first_step = 0 is out of range")
    assert "last_step = 101" in check_step("last_step", 101)
    assert check_step("first_step", -3) is None


def test_active_steps_combine_steps_and_sigmas():
    assert active_steps(Window(1, -1), SCHEDULE) == [1, 2, 3, 4, 5]
    assert active_steps(Window(2, 4), SCHEDULE) == [2, 3, 4]
    assert active_steps(Window(1, -1, sigma_high=2.0, sigma_low=0.6), SCHEDULE) == [3, 4]
    assert active_steps(Window(4, 5, sigma_high=2.0, sigma_low=0.6), SCHEDULE) == [4]
    assert active_steps(Window(1, 2, sigma_high=2.0, sigma_low=0.6), SCHEDULE) == []


def test_percent_to_sigma_interpolates_log_sigma():
    table = [0.1 * 2 ** i for i in range(11)]  # 11 entries: t = 0..10
    assert percent_to_sigma(0.0, table) == float("inf") and percent_to_sigma(1.0, table) == 0.0
    assert percent_to_sigma(0.5, table) == pytest.approx(table[5])  # t = 5
    assert percent_to_sigma(0.25, table) == pytest.approx(0.1 * 2 ** 7.5)  # t = 7.5, geometric mean
    assert percent_to_sigma(1e-9, table) == pytest.approx(table[10])


def test_check_window():
    assert check_window(1, -1, 0.0, 1.0) is None and check_window(2, 4, 0.3, 0.3) is None
    assert check_window(1, -1, -0.1, 1.0) == "start_percent = -0.1 is out of range: allowed 0.0 to 1.0"
    assert check_window(1, -1, 0.0, 1.5) == "end_percent = 1.5 is out of range: allowed 0.0 to 1.0"
    assert check_window(1, -1, 0.7, 0.2) == "start_percent = 0.7 must not be above end_percent = 0.2"
    assert check_window(0, -1, 0.0, 1.0) == check_step("first_step", 0)  # steps first, as Timed FreeU
    assert check_window(1, 101, 0.7, 0.2) == check_step("last_step", 101)


def test_reversed_steps_of_one_sign_are_refused_by_the_check():
    """Same sign and first after last: no schedule has a step in that window, so it is an input error."""
    message = check_window(4, 2, 0.0, 1.0)
    assert message.startswith("first_step = 4 is after last_step = 2: the window selects no step")
    assert "swap them" in message
    assert check_window(-1, -3, 0.0, 1.0).startswith("first_step = -1 is after last_step = -3")
    for first, last in ((2, 2), (2, 4), (-3, -1), (5, -3), (-2, 3), (1, -1)):  # mixed signs depend on N
        assert check_window(first, last, 0.0, 1.0) is None


def test_empty_window_message_depends_on_the_schedule_length():
    # first_step = 5, last_step = -3: steps 5..N-2, so nothing below N = 7
    assert empty_window_message(5, -3, 7) is None and list(Window(5, -3).steps(7)) == [5]
    message = empty_window_message(5, -3, 6)
    assert message == ("first_step = 5 and last_step = -3 select no step of this 6-step schedule (they resolve to "
                       "steps 5 to 4), so this Timed FreeU does nothing")
    # first_step = -2, last_step = 3: steps N-1..3, so nothing above N = 4
    assert empty_window_message(-2, 3, 4) is None and empty_window_message(-2, 3, 5) is not None
    assert empty_window_message(6, 9, 5) is not None and empty_window_message(6, 9, 6) is None  # beyond the end
    for n in range(1, 30):  # the message says exactly when the window is empty
        for first, last in ((5, -3), (-2, 3), (2, 4), (-3, -1), (6, 9)):
            assert (empty_window_message(first, last, n) is None) == bool(list(Window(first, last).steps(n)))
