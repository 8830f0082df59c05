from splitmind.restarts import RestartPolicy


def test_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    policy = RestartPolicy(max_restarts=4, window_s=100, first_delay_s=1, max_delay_s=5)
    assert [policy.on_death("decode-0", t) for t in (0, 1, 2, 3)] == [1, 2, 4, 5]
    assert policy.on_death("decode-0", 4) is None  # a fifth death within the window
    assert policy.total == {"decode-0": 4}


def test_deaths_outside_the_window_are_forgotten() -> None:
    policy = RestartPolicy(max_restarts=2, window_s=10, first_delay_s=1, max_delay_s=30)
    assert policy.on_death("gateway", 0) == 1
    assert policy.on_death("gateway", 5) == 2
    assert policy.on_death("gateway", 20) == 1  # both earlier deaths are older than the window
    assert policy.on_death("prefill-0", 20) == 1  # counted per process
    assert policy.total == {"gateway": 3, "prefill-0": 1}
