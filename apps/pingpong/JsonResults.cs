using System.Text.Json;

namespace Onload.Apps.PingPong;

/// <summary>The --json file of a run: one object, one "key": value per line (perf/*.sh read them with sed).</summary>
internal static class JsonResults
{
    /// <summary>Writes the object: the label (if given) and the tool's name, then <paramref name="fields"/>.</summary>
    public static void Write(string path, string? label, Action<Utf8JsonWriter> fields)
    {
        using var stream = File.Create(path);
        using var j = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        j.WriteStartObject();
        if (label != null)
            j.WriteString("label", label);
        j.WriteString("tool", "onload-pingpong");
        fields(j);
        j.WriteEndObject();
    }
}
