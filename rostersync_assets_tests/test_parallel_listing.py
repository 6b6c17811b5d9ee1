"""Looking at many districts at once: bounded, never raising, never waiting past the budget (pure)."""

import threading
import time

import pytest

from rostersync_assets.connectors.parallel_listing import ListingSettings, LookFailed, describe_failure, look_in_parallel
from rostersync_assets.connectors.sftp import SftpUnavailable


def test_every_item_is_looked_at_with_at_most_the_given_number_at_once():
    running, peak, lock = 0, 0, threading.Lock()

    def look(item: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return item * 2

    results = look_in_parallel({f"d{i}": i for i in range(40)}, look, workers=4, budget_s=10)
    assert results == {f"d{i}": i * 2 for i in range(40)}
    assert peak == 4


def test_a_failing_look_is_reported_with_its_reason_and_the_others_go_on():
    def look(item: str) -> str:
        if item == "down":
            raise SftpUnavailable("cannot connect to 10.0.0.1:22 as 'adams': timed out")
        return item

    results = look_in_parallel({"a": "up", "b": "down"}, look, workers=2, budget_s=10)
    assert results["a"] == "up"
    assert isinstance(results["b"], LookFailed)
    assert results["b"].reason.startswith("cannot connect to 10.0.0.1:22 as 'adams': timed out (after 0.")


def test_the_budget_bounds_the_wait_and_names_what_was_not_looked_at():
    release = threading.Event()

    def look(item: str) -> str:
        if item == "hangs":
            release.wait(10)
        return item

    started = time.monotonic()
    results = look_in_parallel({"hung": "hangs", "quick": "ok"}, look, workers=2, budget_s=0.3)
    release.set()
    assert time.monotonic() - started < 2
    assert results["quick"] == "ok"
    assert results["hung"] == LookFailed("not looked at within the tick's budget of 0.3 s")


def test_nothing_to_look_at_is_an_empty_answer():
    assert look_in_parallel({}, lambda item: item, workers=4, budget_s=1) == {}


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (SftpUnavailable("login to h:22 as 'u' was refused"), "login to h:22 as 'u' was refused"),
        (ValueError("environment variable X is not set"), "environment variable X is not set"),
        (EOFError(), "EOFError"),
        (OSError(113, "No route to host"), "OSError: [Errno 113] No route to host"),
    ],
)
def test_failures_read_as_one_line_for_an_operator(error, text):
    assert describe_failure(error) == text


def test_settings_come_from_the_environment_with_defaults():
    assert ListingSettings.from_environ({}) == ListingSettings()
    custom = ListingSettings.from_environ(
        {"ROSTERSYNC_LISTING_WORKERS": "4", "ROSTERSYNC_LISTING_TIMEOUT_S": "2.5", "ROSTERSYNC_LISTING_BUDGET_S": "30",
         "ROSTERSYNC_SCHEDULE_SETTLE_S": "0"}
    )
    assert custom == ListingSettings(workers=4, timeout_s=2.5, budget_s=30, settle_s=0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ROSTERSYNC_LISTING_WORKERS", "2.5", "ROSTERSYNC_LISTING_WORKERS must be a whole number, not '2.5'"),
        ("ROSTERSYNC_LISTING_WORKERS", "0", "ROSTERSYNC_LISTING_WORKERS must be at least 1"),
        ("ROSTERSYNC_LISTING_TIMEOUT_S", "-1", "ROSTERSYNC_LISTING_TIMEOUT_S must be a positive number"),
        ("ROSTERSYNC_LISTING_BUDGET_S", "soon", "ROSTERSYNC_LISTING_BUDGET_S must be a number, not 'soon'"),
        ("ROSTERSYNC_SCHEDULE_SETTLE_S", "-2", "ROSTERSYNC_SCHEDULE_SETTLE_S must not be negative"),
    ],
)
def test_unusable_settings_name_the_variable(name, value, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        ListingSettings.from_environ({name: value})
