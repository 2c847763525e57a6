using Onload.Vnic;
using Onload.Vnic.Inspect;
using Onload.Vnic.Sim;
using static Onload.Tests.Inspect.InspectFrames;

namespace Onload.Tests.Inspect;

[TestFixture]
public sealed class InspectionSettingsTests
{
    private readonly VirtualClock _clock = new();
    private SimLink _link = null!;
    private string _dir = null!;

    [SetUp]
    public void SetUp()
    {
        _link = new SimLink(seed: 2, _clock);
        _dir = Directory.CreateTempSubdirectory("onload-capture-").FullName;
    }

    [TearDown]
    public void TearDown()
    {
        _link.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private IVnic Apply(IVnic vnic, Dictionary<string, string> env, out IDisposable? resources) =>
        InspectionSettings.Apply(vnic, name => env.GetValueOrDefault(name), _clock, out resources);

    [Test]
    public void With_nothing_set_the_VNIC_comes_back_unchanged()
    {
        var vnic = Apply(_link.A, [], out var resources);
        Assert.That(vnic, Is.SameAs(_link.A));
        Assert.That(resources, Is.Null);
    }

    [Test]
    public void The_capture_path_gets_the_pid_and_the_options_from_the_environment()
    {
        string pattern = Path.Combine(_dir, "cap-%p.pcap");
        var vnic = (InspectedVnic)Apply(_link.A, new()
        {
            [InspectionSettings.CaptureVariable] = pattern,
            [InspectionSettings.SnapLengthVariable] = "96",
            [InspectionSettings.CountVariable] = "5",
        }, out var resources);
        var capture = (PcapWriter)resources!;
        capture.Dispose();
        Assert.That(capture.Path, Is.EqualTo(Path.Combine(_dir, $"cap-{Environment.ProcessId}.pcap")));
        Assert.That(capture.Options.SnapLength, Is.EqualTo(96));
        Assert.That(capture.Options.MaxFrames, Is.EqualTo(5));
        Assert.That(vnic.ReceiveInspectors, Is.EqualTo(new[] { capture }));
        Assert.That(vnic.TransmitInspectors, Is.EqualTo(new[] { capture }));
    }

    [Test]
    public void Received_frames_are_captured_before_the_veto_and_sent_ones_after_it()
    {
        string path = Path.Combine(_dir, "order.pcap");
        IDisposable? resources;
        using (var vnic = Apply(_link.A, new()
               {
                   [InspectionSettings.CaptureVariable] = path,
                   [InspectionSettings.VetoVariable] = "drop any udp dport 7001",
               }, out resources))
        using (resources)
        {
            Assert.That(vnic.Transmit([InPool(vnic.Buffers, Udp("10.0.0.1", 1, "10.0.0.2", 7001)),
                InPool(vnic.Buffers, Udp("10.0.0.1", 1, "10.0.0.2", 7002))]), Is.EqualTo(2));
            _link.B.Transmit([InPool(_link.B.Buffers, Udp("10.0.0.2", 1, "10.0.0.1", 7001)),
                InPool(_link.B.Buffers, Udp("10.0.0.2", 1, "10.0.0.1", 7003))]);
            _clock.Advance(1_000_000);
            Assert.That(Drain(vnic).Select(UdpDestinationPort), Is.EqualTo(new[] { 7003 }));
            Assert.That(vnic.Buffers.Available, Is.EqualTo(vnic.Buffers.Count));
        }
        Assert.That(PcapReader.ReadFile(path).Select(r => UdpDestinationPort(r.Data)), Is.EqualTo(new[] { 7002, 7001, 7003 }),
            "the vetoed datagram to send is missing; the vetoed one received is there");
    }

    [Test]
    public void Veto_rules_alone_need_no_capture_file()
    {
        var vnic = (InspectedVnic)Apply(_link.A, new() { [InspectionSettings.VetoVariable] = "drop any icmp" }, out var resources);
        Assert.That(resources, Is.Null);
        Assert.That(vnic.ReceiveInspectors.Single(), Is.InstanceOf<VetoRules>());
    }

    [TestCase(InspectionSettings.VetoVariable, "drop everything")]
    [TestCase(InspectionSettings.SnapLengthVariable, "0")]
    [TestCase(InspectionSettings.SnapLengthVariable, "lots")]
    [TestCase(InspectionSettings.CountVariable, "-1")]
    public void A_bad_setting_is_refused_and_the_VNIC_left_to_its_owner(string name, string value)
    {
        var env = new Dictionary<string, string> { [InspectionSettings.CaptureVariable] = Path.Combine(_dir, "x.pcap"), [name] = value };
        var e = Assert.Throws<FormatException>(() => Apply(_link.A, env, out _))!;
        Assert.That(e.Message, Does.Contain(name == InspectionSettings.VetoVariable ? "everything" : name));
        Assert.That(File.Exists(Path.Combine(_dir, "x.pcap")), Is.False, "no file is left behind");
    }
}
