from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime import telemetry


def test_trace_context_crosses_kafka_headers():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("caller") as caller:
        headers = telemetry.inject()
    assert [k for k, _ in headers] == ["traceparent"]
    trace_id = f"{caller.get_span_context().trace_id:032x}"
    assert trace_id in headers[0][1].decode()
    # the consumer side continues the same trace
    ctx = telemetry._propagator.extract(headers, getter=telemetry._getter)
    with tracer.start_as_current_span("consumer", context=ctx) as child:
        assert child.get_span_context().trace_id == caller.get_span_context().trace_id
        assert child.parent.span_id == caller.get_span_context().span_id


def test_no_span_no_headers():
    assert telemetry.inject() == []


def test_propagation_only_hands_the_incoming_traceparent_on():
    telemetry.setup("t")  # the default: no spans, context passed through
    tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with telemetry.consuming("topic", [("other", b"x"), ("traceparent", tp)]):
        assert telemetry.inject() == [("traceparent", tp)]
    assert telemetry.inject() == []


def test_producing_starts_a_trace_when_there_is_none():
    telemetry.setup("t")
    with telemetry.producing("publish"):
        [(key, value)] = telemetry.inject()
        again = telemetry.inject()
    version, trace_id, span_id, flags = value.decode().split("-")
    assert key == "traceparent" and version == "00" and len(trace_id) == 32 and len(span_id) == 16
    assert again == [(key, value)]  # every event of that publish carries the same context
    assert telemetry.inject() == []
