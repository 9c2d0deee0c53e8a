def test_rllibs_own_rlmoduleconfig_warning_is_dropped_and_others_are_not(caplog):
    import logging

    from ray._common.deprecation import deprecation_warning

    from policies.level_policy_module import build_level_module

    with caplog.at_level(logging.WARNING, logger="ray._common.deprecation"):
        build_level_module(8)
        deprecation_warning(old="something_else", error=False)
    messages = [record.getMessage() for record in caplog.records]
    assert not any("RLModuleConfig" in message for message in messages)
    assert any("something_else" in message for message in messages)
