package dev.nnzip.app.core

import dev.nnzip.Classifier
import dev.nnzip.NnzipException
import java.io.InputStream

/**
 * Loads a [Classifier] once and hands the same instance to every caller: the first call decodes
 * the `.nnz` (tens to hundreds of milliseconds, so call it off the UI thread), later calls return
 * at once. A failed load is remembered too, so the app shows the same error instead of retrying
 * a broken asset on every photo.
 *
 * Platform-free: the app passes `{ assets.open("model.nnz") }`, tests pass a file stream.
 */
class ModelLoader(private val open: () -> InputStream) {
    private val lock = Any()
    private var result: Result<Classifier>? = null

    /** The loaded classifier; throws the load failure ([NnzipException] or I/O) on every call. */
    fun get(): Classifier = synchronized(lock) {
        val r = result ?: runCatching { open().use { Classifier.fromBytes(it.readBytes()) } }.also { result = it }
        r.getOrThrow()
    }

    /** Whether a load was attempted and succeeded. */
    val isLoaded: Boolean get() = synchronized(lock) { result?.isSuccess == true }

    companion object {
        /**
         * A one-line, user-facing explanation of a failure: the error kind and the library's
         * message (which says what to do).
         */
        fun describe(e: Throwable): String = when (e) {
            is NnzipException.BadFile -> "The model file is damaged: ${e.message}"
            is NnzipException.UnsupportedVersion -> "The model file is too new for this app: ${e.message}"
            is NnzipException.BadImage -> "This picture cannot be read: ${e.message}"
            is NnzipException.WrongPixelCount -> "Internal pixel-format error: ${e.message}"
            is NnzipException.Io -> "Cannot read the model: ${e.message}"
            is NnzipException.Internal -> "The model cannot run: ${e.message}"
            else -> "${e.javaClass.simpleName}: ${e.message}"
        }
    }
}
