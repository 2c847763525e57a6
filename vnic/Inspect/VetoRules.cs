using System.Globalization;

namespace Onload.Vnic.Inspect;

/// <summary>
/// A small ordered rule set that vetoes frames, parsed from text such as
/// <c>drop rx udp dport 7001; drop tx tcp sport 8080; drop any icmp; drop rx host 10.0.0.9</c>.
/// The first rule that matches decides; a frame no rule matches passes.
/// </summary>
/// <remarks>
/// Grammar (keywords in any case; rules separated by <c>;</c>; clauses after the action in any order, each at most once):
/// <code>
/// RULE      = ACTION [rx | tx | any] [tcp | udp | icmp | arp | ip] [sport N] [dport N] [port N] [host A.B.C.D]
/// ACTION    = drop | pass
/// </code>
/// No direction means <c>any</c>. A port clause without a protocol means TCP or UDP, and is refused with
/// <c>icmp</c>, <c>arp</c> or <c>ip</c>. Matching reads the frame's headers once, bounds-checked: a short or odd frame
/// matches only the clauses its bytes bear out, and never throws.
/// </remarks>
public sealed class VetoRules : IFrameInspector
{
    private readonly VetoRule[] _rules;

    public VetoRules(IEnumerable<VetoRule> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        _rules = [.. rules];
    }

    public IReadOnlyList<VetoRule> Rules => _rules;

    /// <summary>Frames dropped, by any rule.</summary>
    public long Dropped { get; private set; }

    public FrameVerdict Inspect(FrameDirection direction, ReadOnlySpan<byte> frame, long timestampNs)
    {
        var rules = _rules;
        if (rules.Length == 0)
            return FrameVerdict.Pass;
        var headers = new FrameHeaders(frame);
        foreach (var rule in rules)
        {
            if (!rule.Matches(direction, in headers))
                continue;
            rule.Hits++;
            if (rule.Action == VetoAction.Pass)
                return FrameVerdict.Pass;
            Dropped++;
            return FrameVerdict.Drop;
        }
        return FrameVerdict.Pass;
    }

    public override string ToString() => string.Join("; ", _rules.Select(r => r.ToString()));

    /// <summary>
    /// Parses a rule set. Throws <see cref="FormatException"/> naming the offending token and its position (0-based
    /// character offset in <paramref name="text"/>). Empty rules (<c>;;</c>, a trailing <c>;</c>) are ignored.
    /// </summary>
    public static VetoRules Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var rules = new List<VetoRule>();
        var tokens = Tokenize(text);
        int i = 0;
        while (i < tokens.Count)
        {
            if (tokens[i].Text == ";")
            {
                i++;
                continue;
            }
            rules.Add(ParseRule(tokens, ref i));
        }
        return new VetoRules(rules);
    }

    private readonly record struct Token(string Text, int Position);

    private static List<Token> Tokenize(string text)
    {
        var tokens = new List<Token>();
        int i = 0;
        while (i < text.Length)
        {
            char c = text[i];
            if (char.IsWhiteSpace(c))
            {
                i++;
                continue;
            }
            if (c == ';')
            {
                tokens.Add(new Token(";", i++));
                continue;
            }
            int start = i;
            while (i < text.Length && !char.IsWhiteSpace(text[i]) && text[i] != ';')
                i++;
            tokens.Add(new Token(text[start..i], start));
        }
        return tokens;
    }

    private static VetoRule ParseRule(List<Token> tokens, ref int i)
    {
        var first = tokens[i++];
        VetoAction action = first.Text.ToLowerInvariant() switch
        {
            "drop" => VetoAction.Drop,
            "pass" => VetoAction.Pass,
            _ => throw Error(first, "an action (drop or pass)"),
        };
        FrameDirection? direction = null;
        bool haveDirection = false;
        var protocol = VetoProtocol.Any;
        Token? protocolToken = null;
        ushort? sport = null, dport = null, port = null;
        Token? portToken = null;
        uint? host = null;
        while (i < tokens.Count && tokens[i].Text != ";")
        {
            var t = tokens[i++];
            string word = t.Text.ToLowerInvariant();
            switch (word)
            {
                case "rx" or "tx" or "any":
                    if (haveDirection)
                        throw Error(t, "one direction per rule");
                    haveDirection = true;
                    direction = word switch { "rx" => FrameDirection.Receive, "tx" => FrameDirection.Transmit, _ => null };
                    break;
                case "tcp" or "udp" or "icmp" or "arp" or "ip":
                    if (protocolToken is not null)
                        throw Error(t, "one protocol per rule");
                    protocolToken = t;
                    protocol = Enum.Parse<VetoProtocol>(word, ignoreCase: true);
                    break;
                case "sport":
                    Once(sport.HasValue, t);
                    portToken ??= t;
                    sport = ParsePort(tokens, ref i, t);
                    break;
                case "dport":
                    Once(dport.HasValue, t);
                    portToken ??= t;
                    dport = ParsePort(tokens, ref i, t);
                    break;
                case "port":
                    Once(port.HasValue, t);
                    portToken ??= t;
                    port = ParsePort(tokens, ref i, t);
                    break;
                case "host":
                    Once(host.HasValue, t);
                    host = ParseAddress(Operand(tokens, ref i, t, "an IPv4 address A.B.C.D"));
                    break;
                default:
                    throw Error(t, "rx, tx, any, tcp, udp, icmp, arp, ip, sport, dport, port, host or ';'");
            }
        }
        if (portToken is { } pt && protocol is not (VetoProtocol.Any or VetoProtocol.Tcp or VetoProtocol.Udp))
            throw Error(pt, $"no port clause with {protocol.ToString().ToLowerInvariant()} (ports are TCP's and UDP's)");
        return new VetoRule
        {
            Action = action,
            Direction = direction,
            Protocol = protocol,
            SourcePort = sport,
            DestinationPort = dport,
            Port = port,
            Host = host,
        };
    }

    private static void Once(bool already, Token t)
    {
        if (already)
            throw Error(t, $"one {t.Text.ToLowerInvariant()} clause per rule");
    }

    private static Token Operand(List<Token> tokens, ref int i, Token keyword, string what)
    {
        if (i >= tokens.Count || tokens[i].Text == ";")
            throw new FormatException($"veto rules: '{keyword.Text}' at position {keyword.Position} wants {what} after it");
        return tokens[i++];
    }

    private static ushort ParsePort(List<Token> tokens, ref int i, Token keyword)
    {
        var t = Operand(tokens, ref i, keyword, "a port number 0..65535");
        if (!ushort.TryParse(t.Text, NumberStyles.None, CultureInfo.InvariantCulture, out ushort port))
            throw Error(t, "a port number 0..65535");
        return port;
    }

    private static uint ParseAddress(Token t)
    {
        var parts = t.Text.Split('.');
        if (parts.Length != 4)
            throw Error(t, "an IPv4 address A.B.C.D");
        uint address = 0;
        foreach (string part in parts)
        {
            if (part.Length is 0 or > 3 || !byte.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out byte octet))
                throw Error(t, "an IPv4 address A.B.C.D");
            address = address << 8 | octet;
        }
        return address;
    }

    private static FormatException Error(Token t, string expected) =>
        new($"veto rules: unexpected '{t.Text}' at position {t.Position}: expected {expected}");
}
