package dev.nnzip.app

import android.app.Activity
import android.content.ContentValues
import android.content.Intent
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Color
import android.graphics.Typeface
import android.net.Uri
import android.os.Build
import android.os.Bundle
import android.provider.MediaStore
import android.util.Log
import android.util.TypedValue
import android.view.Gravity
import android.view.View
import android.widget.Button
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.ProgressBar
import android.widget.ScrollView
import android.widget.TextView
import dev.nnzip.Classifier
import dev.nnzip.android.classifyBitmap
import dev.nnzip.app.core.Format
import dev.nnzip.app.core.ModelLoader
import dev.nnzip.app.core.SavedResult

/**
 * The whole app: pick a photo (system photo picker) or take one, classify it with the bundled
 * compressed model, show the top-5 with confidence bars, the inference time and the model card.
 *
 * Android framework only (no AndroidX, no Compose) and no generated resources: the UI is built in
 * code, so the APK stays small and this file compiles against a bare Android API jar.
 */
class MainActivity : Activity() {
    private lateinit var image: ImageView
    private lateinit var status: TextView
    private lateinit var timing: TextView
    private lateinit var card: TextView
    private val rows = ArrayList<Pair<TextView, ProgressBar>>()
    private val app: NnzipApp get() = application as NnzipApp

    /** Camera output URI while the camera app is open (API 29+), kept across process death. */
    private var pendingCameraUri: Uri? = null
    /** The photo on screen, if it has a URI (to redraw it after rotation). */
    private var shownUri: Uri? = null

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(buildUi())
        savedInstanceState?.let { restore(it) }
        // Load the model once per process, off the main thread; the card appears when it is ready.
        app.executor.execute {
            val text = try {
                Format.modelCard(app.model.get().info())
            } catch (e: Exception) {
                Log.e(TAG, "model load failed", e)
                ModelLoader.describe(e)
            }
            app.main.post { app.visible?.card?.text = text }
        }
    }

    override fun onStart() {
        super.onStart()
        app.visible = this
        // A result that finished while no activity was visible (e.g. during rotation).
        app.lastResult?.let { show(it) }
    }

    override fun onStop() {
        if (app.visible === this) app.visible = null
        super.onStop()
    }

    override fun onSaveInstanceState(outState: Bundle) {
        super.onSaveInstanceState(outState)
        app.lastResult?.let {
            outState.putStringArray(K_LABELS, it.labels.toTypedArray())
            outState.putIntArray(K_INDICES, it.indices.toIntArray())
            outState.putFloatArray(K_PROBS, it.probabilities.toFloatArray())
            outState.putLong(K_NANOS, it.inferenceNanos)
        }
        outState.putString(K_STATUS, status.text.toString())
        pendingCameraUri?.let { outState.putString(K_CAMERA, it.toString()) }
        shownUri?.let { outState.putString(K_SHOWN, it.toString()) }
    }

    private fun restore(b: Bundle) {
        SavedResult.restore(
            b.getStringArray(K_LABELS),
            b.getIntArray(K_INDICES),
            b.getFloatArray(K_PROBS),
            b.getLong(K_NANOS),
        )?.let { if (app.lastResult == null) app.lastResult = it }
        b.getString(K_STATUS)?.let { status.text = it }
        pendingCameraUri = b.getString(K_CAMERA)?.let(Uri::parse)
        shownUri = b.getString(K_SHOWN)?.let(Uri::parse)
        shownUri?.let { uri -> app.executor.execute { decode(uri)?.let { bmp -> app.main.post { image.setImageBitmap(bmp) } } } }
    }

    // ---- picking and capturing -------------------------------------------------------------

    private fun pickPhoto() {
        val intent = if (Build.VERSION.SDK_INT >= 33) {
            Intent(MediaStore.ACTION_PICK_IMAGES).setType("image/*")
        } else {
            Intent(Intent.ACTION_GET_CONTENT).setType("image/*").addCategory(Intent.CATEGORY_OPENABLE)
        }
        launch(intent, REQ_PICK)
    }

    private fun takePhoto() {
        val intent = Intent(MediaStore.ACTION_IMAGE_CAPTURE)
        if (Build.VERSION.SDK_INT >= 29) {
            // Full-size photo written straight into the user's Pictures/nnzip (no FileProvider and
            // no storage permission needed on API 29+).
            val values = ContentValues().apply {
                put(MediaStore.Images.Media.DISPLAY_NAME, "nnzip_${System.currentTimeMillis()}.jpg")
                put(MediaStore.Images.Media.MIME_TYPE, "image/jpeg")
                put(MediaStore.Images.Media.RELATIVE_PATH, "Pictures/nnzip")
            }
            val uri = contentResolver.insert(MediaStore.Images.Media.EXTERNAL_CONTENT_URI, values)
            if (uri != null) {
                pendingCameraUri = uri
                intent.putExtra(MediaStore.EXTRA_OUTPUT, uri)
            }
        }
        // Below API 29 (or if the insert failed) the camera returns a thumbnail in the "data" extra.
        launch(intent, REQ_CAMERA)
    }

    private fun launch(intent: Intent, request: Int) {
        try {
            @Suppress("DEPRECATION")
            startActivityForResult(intent, request)
        } catch (e: android.content.ActivityNotFoundException) {
            status.text = if (request == REQ_CAMERA) "No camera app on this device." else "No photo picker on this device."
        }
    }

    @Deprecated("Framework callback; AndroidX's Activity Result API is deliberately not used")
    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        @Suppress("DEPRECATION")
        super.onActivityResult(requestCode, resultCode, data)
        val camera = pendingCameraUri
        if (requestCode == REQ_CAMERA) pendingCameraUri = null
        if (resultCode != RESULT_OK) {
            if (requestCode == REQ_CAMERA && camera != null) runCatching { contentResolver.delete(camera, null, null) }
            return
        }
        when (requestCode) {
            REQ_PICK -> data?.data?.let { classifyUri(it) }
            REQ_CAMERA -> when {
                camera != null -> classifyUri(camera)
                else -> thumbnail(data)?.let { classifyBitmap(it, null) } ?: run { status.text = "The camera returned no picture." }
            }
        }
    }

    private fun thumbnail(data: Intent?): Bitmap? {
        val extras = data?.extras ?: return null
        return if (Build.VERSION.SDK_INT >= 33) {
            extras.getParcelable("data", Bitmap::class.java)
        } else {
            @Suppress("DEPRECATION")
            extras.getParcelable("data") as? Bitmap
        }
    }

    // ---- classification --------------------------------------------------------------------

    private fun classifyUri(uri: Uri) {
        status.text = "Reading the photo…"
        app.executor.execute {
            val bmp = decode(uri)
            if (bmp == null) {
                app.main.post { app.visible?.status?.text = "This picture cannot be opened." }
                return@execute
            }
            app.main.post { app.visible?.let { it.shownUri = uri; it.image.setImageBitmap(bmp) } }
            classifyNow(bmp)
        }
    }

    private fun classifyBitmap(bmp: Bitmap, uri: Uri?) {
        shownUri = uri
        image.setImageBitmap(bmp)
        status.text = "Classifying…"
        app.executor.execute { classifyNow(bmp) }
    }

    /** On the executor: classify and hand the result to whichever activity is visible. */
    private fun classifyNow(bitmap: Bitmap) {
        val text: String
        try {
            val classifier: Classifier = app.model.get()
            val t0 = System.nanoTime()
            val top = classifier.classifyBitmap(bitmap, 5u)
            val result = SavedResult.of(top, System.nanoTime() - t0)
            Log.i(TAG, "top-1 ${top.firstOrNull()?.let(Format::prediction)} in ${Format.millis(result.inferenceNanos)}")
            app.main.post {
                app.lastResult = result
                app.visible?.show(result)
            }
            return
        } catch (e: Exception) {
            Log.e(TAG, "classification failed", e)
            text = ModelLoader.describe(e)
        }
        app.main.post { app.visible?.status?.text = text }
    }

    /**
     * Decodes a content URI to a bitmap no smaller than the model needs (short side ≥ 256 px) and
     * not much larger, whatever the format Android can read (JPEG, PNG, HEIF, WebP…).
     */
    private fun decode(uri: Uri): Bitmap? = try {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        contentResolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, bounds) }
        var sample = 1
        while (minOf(bounds.outWidth, bounds.outHeight) / (sample * 2) >= 256) sample *= 2
        val opts = BitmapFactory.Options().apply {
            inSampleSize = sample
            inPreferredConfig = Bitmap.Config.ARGB_8888
        }
        contentResolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, opts) }
    } catch (e: Exception) {
        Log.w(TAG, "cannot decode $uri", e)
        null
    }

    private fun show(r: SavedResult) {
        val preds = r.predictions()
        status.text = preds.firstOrNull()?.let { "It looks like ${it.label}." } ?: "No classes."
        rows.forEachIndexed { i, (label, bar) ->
            val p = preds.getOrNull(i)
            label.visibility = if (p == null) View.GONE else View.VISIBLE
            bar.visibility = label.visibility
            if (p != null) {
                label.text = Format.prediction(p)
                bar.progress = Format.bar(p.probability, bar.max)
            }
        }
        timing.text = "Inference ${Format.millis(r.inferenceNanos)} on this phone"
    }

    // ---- UI in code --------------------------------------------------------------------------

    private fun dp(v: Int): Int =
        TypedValue.applyDimension(TypedValue.COMPLEX_UNIT_DIP, v.toFloat(), resources.displayMetrics).toInt()

    private fun buildUi(): View {
        val col = LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            setPadding(dp(16), dp(16), dp(16), dp(16))
        }
        val buttons = LinearLayout(this).apply { orientation = LinearLayout.HORIZONTAL }
        val weight = LinearLayout.LayoutParams(0, LinearLayout.LayoutParams.WRAP_CONTENT, 1f)
        buttons.addView(Button(this).apply { text = "Choose photo"; setOnClickListener { pickPhoto() } }, weight)
        buttons.addView(Button(this).apply { text = "Take photo"; setOnClickListener { takePhoto() } }, LinearLayout.LayoutParams(weight))
        col.addView(buttons)
        image = ImageView(this).apply {
            adjustViewBounds = true
            scaleType = ImageView.ScaleType.FIT_CENTER
            contentDescription = "The photo being classified"
        }
        col.addView(image, LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT, dp(240)))
        status = TextView(this).apply {
            text = "Choose or take a photo."
            setTextSize(TypedValue.COMPLEX_UNIT_SP, 20f)
            setTypeface(typeface, Typeface.BOLD)
            setPadding(0, dp(12), 0, dp(8))
        }
        col.addView(status)
        repeat(5) {
            val label = TextView(this).apply { visibility = View.GONE; setTextSize(TypedValue.COMPLEX_UNIT_SP, 16f) }
            val bar = ProgressBar(this, null, android.R.attr.progressBarStyleHorizontal).apply {
                max = 1000
                visibility = View.GONE
            }
            col.addView(label)
            col.addView(bar, LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT, dp(12)))
            rows += label to bar
        }
        timing = TextView(this).apply { setPadding(0, dp(8), 0, dp(16)); setTextColor(Color.GRAY) }
        col.addView(timing)
        col.addView(TextView(this).apply {
            text = "Model"
            setTypeface(typeface, Typeface.BOLD)
            gravity = Gravity.START
        })
        card = TextView(this).apply { text = "Loading the model…"; setTextIsSelectable(true) }
        col.addView(card)
        return ScrollView(this).apply { addView(col) }
    }

    companion object {
        private const val TAG = "nnzip"
        private const val REQ_PICK = 1
        private const val REQ_CAMERA = 2
        private const val K_LABELS = "labels"
        private const val K_INDICES = "indices"
        private const val K_PROBS = "probs"
        private const val K_NANOS = "nanos"
        private const val K_STATUS = "status"
        private const val K_CAMERA = "camera_uri"
        private const val K_SHOWN = "shown_uri"
    }
}
