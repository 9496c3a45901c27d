package dev.nnzip.app

import android.app.Application
import android.os.Handler
import android.os.Looper
import dev.nnzip.app.core.ModelLoader
import dev.nnzip.app.core.SavedResult
import java.io.InputStream
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * What lives as long as the process, not an activity: the model (decoded once, it survives
 * rotation), the background thread that loads it and classifies, the last result and which
 * activity is on screen. Holding it here rather than in statics also gives every Robolectric test a
 * fresh app, as a fresh process would.
 */
open class NnzipApp : Application() {
    /** One background thread for loading and inference: calls run in order, the UI never blocks. */
    val executor: ExecutorService =
        Executors.newSingleThreadExecutor { r -> Thread(r, "nnzip").apply { isDaemon = true } }

    /** Posts the background thread's results to the UI thread. */
    val main = Handler(Looper.getMainLooper())

    /** The model, decoded on first use. */
    val model = ModelLoader { openModel() }

    /** The last result in this process (main thread only); mirrored into the saved instance state. */
    var lastResult: SavedResult? = null

    /** The visible activity, if any (main thread only). */
    var visible: MainActivity? = null

    /**
     * Opens the model file: the one bundled in the APK's assets. The JVM tests' application serves
     * a packed model from disk instead (Robolectric cannot read assets without an APK).
     */
    protected open fun openModel(): InputStream = assets.open(MODEL_ASSET)

    companion object {
        /** The bundled model (app/build.gradle.kts packs it into the assets). */
        const val MODEL_ASSET = "model.nnz"
    }
}
