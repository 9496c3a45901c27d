package dev.nnzip.app.core

import dev.nnzip.Prediction

/**
 * A classification result as the app keeps it across rotation and process death: the predictions
 * and the inference time, flattened to plain arrays that fit in an Android `Bundle`
 * (`putStringArray`/`putFloatArray`/`putIntArray`/`putLong`) without any Android type here.
 */
data class SavedResult(
    val labels: List<String>,
    val indices: List<Int>,
    val probabilities: List<Float>,
    val inferenceNanos: Long,
) {
    init {
        require(labels.size == indices.size && labels.size == probabilities.size) {
            "labels, indices and probabilities must have the same length"
        }
    }

    /** The predictions back as binding records. */
    fun predictions(): List<Prediction> =
        labels.indices.map { Prediction(indices[it].toUInt(), labels[it], probabilities[it]) }

    companion object {
        /** Captures a result. */
        fun of(predictions: List<Prediction>, inferenceNanos: Long) = SavedResult(
            predictions.map { it.label },
            predictions.map { it.index.toInt() },
            predictions.map { it.probability },
            inferenceNanos,
        )

        /**
         * Rebuilds a result from the arrays a `Bundle` gave back; `null` when any is missing or
         * they disagree (e.g. state saved by an older app version).
         */
        fun restore(
            labels: Array<String>?,
            indices: IntArray?,
            probabilities: FloatArray?,
            inferenceNanos: Long,
        ): SavedResult? {
            if (labels == null || indices == null || probabilities == null) return null
            if (labels.size != indices.size || labels.size != probabilities.size) return null
            return SavedResult(labels.toList(), indices.toList(), probabilities.toList(), inferenceNanos)
        }
    }
}
