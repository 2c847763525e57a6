using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace Onload.Tests.Managed;

/// <summary>
/// Names what is allocated: the runtime's GCAllocationTick event fires about every 100 KB allocated and names the
/// type of the allocation that crossed the line, so over many messages the types that allocate per message show.
/// </summary>
internal sealed class AllocationSampler : EventListener
{
    private readonly ConcurrentDictionary<string, int> _types = new();

    /// <summary>The sampled types, most often first ("Type xN").</summary>
    public string Summary =>
        _types.IsEmpty ? "none sampled" : string.Join(", ", _types.OrderByDescending(p => p.Value).Select(p => $"{p.Key} x{p.Value}"));

    protected override void OnEventSourceCreated(EventSource eventSource)
    {
        if (eventSource.Name == "Microsoft-Windows-DotNETRuntime")
            EnableEvents(eventSource, EventLevel.Verbose, (EventKeywords)0x1); // GC keyword
    }

    protected override void OnEventWritten(EventWrittenEventArgs eventData)
    {
        if (eventData.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) != true || eventData.PayloadNames is null)
            return;
        int i = eventData.PayloadNames.IndexOf("TypeName");
        if (i >= 0 && eventData.Payload?[i] is string type)
            _types.AddOrUpdate(type, 1, (_, n) => n + 1);
    }
}
