package dev.nnzip.app.core

import dev.nnzip.ModelInfo
import dev.nnzip.Prediction
import java.util.Locale

/**
 * Text shown by the app, kept free of Android APIs so that it is compiled and unit-tested on the
 * JVM (mobile/jvm) together with the generated bindings.
 */
object Format {
    /** "95.1%" for 0.951. Clamped to 0–100 so a non-finite probability never shows as "NaN%". */
    fun percent(probability: Float): String {
        val p = if (probability.isFinite()) probability.coerceIn(0f, 1f) else 0f
        return String.format(Locale.ROOT, "%.1f%%", p * 100f)
    }

    /** "espresso 95.1%". */
    fun prediction(p: Prediction): String = "${p.label} ${percent(p.probability)}"

    /** Progress-bar position (0–[max]) for a probability. */
    fun bar(probability: Float, max: Int = 1000): Int {
        val p = if (probability.isFinite()) probability.coerceIn(0f, 1f) else 0f
        return Math.round(p * max)
    }

    /** "812 B", "27.3 KB", "4.7 MB" (powers of 1000, one decimal above bytes). */
    fun bytes(n: Long): String = when {
        n < 1000 -> "$n B"
        n < 1_000_000 -> String.format(Locale.ROOT, "%.1f KB", n / 1e3)
        n < 1_000_000_000 -> String.format(Locale.ROOT, "%.1f MB", n / 1e6)
        else -> String.format(Locale.ROOT, "%.2f GB", n / 1e9)
    }

    /** "12.3 ms" for a duration in nanoseconds. */
    fun millis(nanos: Long): String = String.format(Locale.ROOT, "%.1f ms", nanos / 1e6)

    /** "4.1×" for a compression ratio. */
    fun ratio(r: Double): String = String.format(Locale.ROOT, "%.1f×", r)

    /**
     * The model card: what the model is and what compression did.
     *
     * ```
     * efficientnet_lite0 · 224×224 input · 1000 classes
     * On disk 18.6 MB, dense weights 18.6 MB (1.0× smaller)
     * accuracy: top-1 75.1%
     * ```
     */
    fun modelCard(info: ModelInfo): String = buildString {
        append(info.name.ifEmpty { "unnamed model" })
        if (info.inputWidth > 0u && info.inputHeight > 0u) {
            append(" · ${info.inputWidth}×${info.inputHeight} input")
        }
        append(" · ${info.labels.size} classes\n")
        append("On disk ${bytes(info.fileBytes.toLong())}, dense weights ${bytes(info.denseBytes.toLong())}")
        if (info.compressionRatio > 0.0) append(" (${ratio(info.compressionRatio)} smaller)")
        val shared = info.tensors.count { it.encoding.startsWith("shared") }
        if (info.tensors.isNotEmpty()) {
            append("\n${info.tensors.size} weight tensors, $shared pruned/shared")
        }
        for (line in extraLines(info.extra)) append("\n$line")
    }

    /**
     * The metadata's measurements in words: `accuracy` (a fraction, labelled test data) and
     * `agreement_top1` (a fraction: how often the compressed model picks the dense model's class,
     * for files compressed without labels, on the photos named by `agreement_measured_on`);
     * other keys as `key: value`.
     */
    fun extraLines(extra: Map<String, String>): List<String> {
        val known = setOf("accuracy", "agreement_top1", "agreement_measured_on")
        val lines = mutableListOf<String>()
        extra["accuracy"]?.toDoubleOrNull()?.let { lines += "accuracy: top-1 ${percent(it.toFloat())}" }
        extra["agreement_top1"]?.toDoubleOrNull()?.let {
            val on = extra["agreement_measured_on"]?.let { w -> " on $w" } ?: ""
            lines += "same top class as the uncompressed model: ${percent(it.toFloat())}$on"
        }
        for ((k, v) in extra.toSortedMap()) {
            if (k !in known || (k != "agreement_measured_on" && v.toDoubleOrNull() == null)) lines += "$k: $v"
        }
        return lines
    }
}
