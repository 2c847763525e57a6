namespace Onload.Vnic.Sim;

/// <summary>
/// What the simulated link does to frames in one direction. Probabilities are per frame in [0, 1];
/// delay is uniform in [<see cref="MinDelayNs"/>, <see cref="MaxDelayNs"/>] of virtual time, so jitter reorders.
/// </summary>
public sealed record LinkFaults
{
    public static readonly LinkFaults None = new();

    public double Loss { get; init; }
    public double Duplicate { get; init; }
    /// <summary>Chance a frame is held back behind the next one sent.</summary>
    public double Reorder { get; init; }
    /// <summary>Chance one bit of the frame is flipped.</summary>
    public double Corrupt { get; init; }
    public long MinDelayNs { get; init; } = 1_000;
    public long MaxDelayNs { get; init; } = 1_000;

    public void Validate()
    {
        foreach (var (name, p) in new[] { ("Loss", Loss), ("Duplicate", Duplicate), ("Reorder", Reorder), ("Corrupt", Corrupt) })
            if (p is < 0 or > 1 || double.IsNaN(p))
                throw new ArgumentOutOfRangeException(name, p, "a probability must be in [0, 1]");
        if (MinDelayNs < 0 || MaxDelayNs < MinDelayNs)
            throw new ArgumentOutOfRangeException(nameof(MaxDelayNs), "delays must satisfy 0 <= min <= max");
    }
}

/// <summary>What the simulated link did, per direction.</summary>
public sealed class LinkStats
{
    public long Sent;
    public long Delivered;
    public long Lost;
    public long Duplicated;
    public long Reordered;
    public long Corrupted;
    public long DroppedQueueFull;
}
