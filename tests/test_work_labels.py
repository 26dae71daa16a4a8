"""`lazyboss work --label`: labels the server would refuse are a usage error at start, not a claim refused for ever."""

from support import run_cli

NOWHERE = "http://127.0.0.1:9"  # refused before any request


def work(*labels):
    return run_cli("work", "--server", NOWHERE, "--type", "t", *labels, "--", "cat", timeout=10)


def test_more_labels_than_a_claim_may_carry_is_a_usage_error():
    finished = work(*(f"--label=k{index}=v" for index in range(33)))
    assert finished.returncode == 2, finished.stderr
    assert "at most 32" in finished.stderr and "cannot claim" not in finished.stderr


def test_one_label_given_twice_with_two_values_is_a_usage_error():
    finished = work("--label", "host=a", "--label", "host=b")
    assert finished.returncode == 2, finished.stderr
    assert "'host'" in finished.stderr and "twice" in finished.stderr
