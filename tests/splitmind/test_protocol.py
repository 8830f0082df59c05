import msgspec
import pytest

from splitmind.protocol import (
    FinishReason,
    GenerateRequest,
    HistogramState,
    KVTransferParams,
    Sampling,
    TokenDelta,
    encoder,
    from_node_decoder,
    kv_params_from_vllm,
    kv_params_to_vllm,
    to_node_decoder,
)

VLLM_PARAMS = {
    "do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": [[3, 4]],
    "remote_engine_id": "e1", "remote_request_id": "r1-abc", "remote_host": "127.0.0.1", "remote_port": 5600,
    "tp_size": 1, "remote_num_tokens": 130, "transfer_mode": "pull", "remote_blocks_expiry_time": None,
}


def test_kv_params_round_trip_keeps_unknown_fields() -> None:
    typed = kv_params_from_vllm(VLLM_PARAMS)
    assert typed.remote_num_tokens == 130
    assert set(typed.extra) == {"do_remote_prefill", "do_remote_decode", "transfer_mode", "remote_blocks_expiry_time"}
    wire = encoder.encode(TokenDelta("r1", [7], FinishReason.LENGTH, typed))
    back = from_node_decoder.decode(wire)
    assert isinstance(back, TokenDelta) and back.kv_transfer is not None
    assert kv_params_to_vllm(back.kv_transfer) == VLLM_PARAMS


def test_overrides_win() -> None:
    out = kv_params_to_vllm(kv_params_from_vllm(VLLM_PARAMS), do_remote_prefill=False)
    assert out["do_remote_prefill"] is False


def test_generate_request_round_trip() -> None:
    req = GenerateRequest("r", [1, 2, 3], Sampling(max_tokens=5, temperature=0.0, stop_token_ids=[2]))
    assert to_node_decoder.decode(encoder.encode(req)) == req


def test_unknown_message_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        to_node_decoder.decode(msgspec.msgpack.encode({"type": "nope", "request_id": "x"}))


def test_histogram_buckets() -> None:
    h = HistogramState(bounds=[0.1, 1.0, float("inf")], counts=[0, 0, 0])
    for v in (0.05, 0.5, 5.0, 0.1):
        h.observe(v)
    assert h.counts == [2, 1, 1]
    assert h.total == pytest.approx(5.65)


def test_kv_params_need_their_required_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        kv_params_from_vllm({"remote_engine_id": "e"})
    assert KVTransferParams.__struct_config__.frozen


def test_zmq_kv_params_are_checked_and_round_trip() -> None:
    with pytest.raises(msgspec.ValidationError):
        kv_params_from_vllm({"transport": "zmq", "remote_num_tokens": 3})  # no transfer_id
    with pytest.raises(msgspec.ValidationError):
        kv_params_from_vllm({"transport": "carrier-pigeon", "transfer_id": "t"})
    reply = {"transport": "zmq", "transfer_id": "r1@prefill-0", "push_to": "tcp://10.0.0.2:5600",
             "remote_num_tokens": 130, "remote_engine_id": "e"}
    typed = kv_params_from_vllm(reply)
    back = from_node_decoder.decode(encoder.encode(TokenDelta("r1", [7], FinishReason.LENGTH, typed)))
    assert isinstance(back, TokenDelta) and back.kv_transfer == typed
    assert kv_params_to_vllm(typed) == {**reply, "remote_request_id": "", "remote_host": "", "remote_port": 0,
                                        "remote_block_ids": [], "tp_size": 1}


def test_nixl_params_reach_vllm_without_the_zmq_fields() -> None:
    assert not {"transport", "transfer_id", "push_to"} & set(kv_params_to_vllm(kv_params_from_vllm(VLLM_PARAMS)))
