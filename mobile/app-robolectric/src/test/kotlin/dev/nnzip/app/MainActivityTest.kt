package dev.nnzip.app

import android.app.Activity
import android.content.Intent
import android.content.pm.ActivityInfo
import android.content.res.Configuration
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Canvas
import android.graphics.Color
import android.net.Uri
import android.os.Looper
import android.provider.MediaStore
import android.view.View
import android.view.ViewGroup
import android.widget.Button
import android.widget.ProgressBar
import android.widget.ScrollView
import android.widget.TextView
import dev.nnzip.Classifier
import dev.nnzip.android.classifyBitmap
import dev.nnzip.app.core.Format
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNotSame
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.android.controller.ActivityController
import org.robolectric.annotation.Config
import org.robolectric.annotation.GraphicsMode
import java.io.File

/**
 * The app's one screen as a person uses it, on the JVM: Robolectric runs the real [MainActivity]
 * (Android 14 framework, native graphics so that views really draw and photos really decode), the
 * app's background thread calls the real host libnnzip through JNA, and the model is the real
 * EfficientNet-Lite0 packed into the app's assets by `nnzip pack` (see pom.xml).
 *
 * Each test saves what the screen shows as a PNG under target/screenshots.
 */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], qualifiers = "w360dp-h640dp-hdpi", application = TestApp::class)
@GraphicsMode(GraphicsMode.Mode.NATIVE)
class MainActivityTest {
    private val shared = File(System.getProperty("nnzip.shared") ?: error("nnzip.shared not set: run through Maven"))
    private val screenshots = File(System.getProperty("nnzip.screenshots") ?: error("nnzip.screenshots not set"))
    private val photos = File(screenshots.parentFile, "photos")

    @Before
    fun servePhotos() {
        photos.mkdirs()
        File(shared, "images/coffee.jpg").copyTo(File(photos, "coffee.jpg"), overwrite = true)
        // What a file manager may offer as a picture: a text file.
        File(photos, "notes.jpg").writeText("Shopping list: coffee beans, milk.\n")
        PhotoProvider.dir = photos
        Robolectric.setupContentProvider(PhotoProvider::class.java, PhotoProvider.AUTHORITY)
        declareActivity()
    }

    /**
     * What the manifest says about the activity (its theme and label): Robolectric reads them from
     * the compiled manifest of a resource APK, which cannot be built here without aapt2.
     */
    private fun declareActivity() {
        val app = RuntimeEnvironment.getApplication()
        val info = ActivityInfo().apply {
            name = MainActivity::class.java.name
            packageName = app.packageName
            nonLocalizedLabel = "nnzip"
            theme = android.R.style.Theme_Material_Light_DarkActionBar
            exported = true
        }
        shadowOf(app.packageManager).addOrUpdateActivity(info)
    }

    @Test
    fun `opening the app shows the model card`() {
        val activity = open().get()
        assertTrue(texts(activity).toString(), "Choose or take a photo." in texts(activity))
        assertTrue(button(activity, "Choose photo").isEnabled && button(activity, "Take photo").isEnabled)
        awaitText(activity, "the model card") { it.startsWith("efficientnet_lite0 · 224×224 input · 1000 classes\nOn disk ") }
        assertEquals("no result rows before a photo", 0, resultRows(activity).size)
        screenshot(activity, "1-opened")
    }

    @Test
    fun `a picked photo shows its top 5 and the inference time`() {
        val activity = open().get()
        pick(activity, "coffee.jpg")
        awaitText(activity, "the result") { it == "It looks like espresso." }
        assertCoffeeResult(activity)
        screenshot(activity, "2-coffee")
    }

    @Test
    fun `the result survives rotation`() {
        val controller = open()
        val before = controller.get()
        pick(before, "coffee.jpg")
        awaitText(before, "the result") { it == "It looks like espresso." }
        val rows = resultRows(before).map { it.first.text.toString() }

        RuntimeEnvironment.setQualifiers("+land")
        controller.recreate()
        val after = controller.get()
        idle()
        assertNotSame("rotation recreates the activity", before, after)
        assertEquals(Configuration.ORIENTATION_LANDSCAPE, after.resources.configuration.orientation)
        assertEquals(rows, resultRows(after).map { it.first.text.toString() })
        assertCoffeeResult(after)
        // The photo is decoded again from its URI on the background thread.
        await("the photo after rotation") { photoShown(after) }
        screenshot(after, "3-rotated")
        // The result rows are below the fold in landscape: the whole scrolled page as well.
        screenshot(after, "3-rotated-page", wholePage = true)
    }

    @Test
    fun `a file that is not an image shows an error`() {
        val activity = open().get()
        awaitText(activity, "the model card") { it.startsWith("efficientnet_lite0") }
        pick(activity, "notes.jpg")
        awaitText(activity, "the error") { it == "This picture cannot be opened." }
        assertEquals("no result rows for a non-image", 0, resultRows(activity).size)
        assertTrue("the app is still running", !activity.isFinishing && !activity.isDestroyed)
        screenshot(activity, "4-not-an-image")
    }

    @Test
    fun `a photo from the camera app is classified`() {
        FakeMediaStore.dir = File(screenshots.parentFile, "camera").also { it.mkdirs() }
        Robolectric.setupContentProvider(FakeMediaStore::class.java, MediaStore.AUTHORITY)
        val activity = open().get()
        button(activity, "Take photo").performClick()
        val started = shadowOf(activity).nextStartedActivityForResult
        assertNotNull("the camera button starts an activity for its result", started)
        assertEquals(MediaStore.ACTION_IMAGE_CAPTURE, started.intent.action)
        // On API 29+ the photo goes straight into MediaStore (Pictures/nnzip) through EXTRA_OUTPUT.
        val output = started.intent.getParcelableExtra(MediaStore.EXTRA_OUTPUT, Uri::class.java)
        assertTrue("EXTRA_OUTPUT is a MediaStore image URI: $output", output.toString().startsWith(MediaStore.Images.Media.EXTERNAL_CONTENT_URI.toString()))
        // The camera app writes its photo there and answers with no data.
        activity.contentResolver.openOutputStream(output!!)!!.use { out -> File(shared, "images/coffee.jpg").inputStream().use { it.copyTo(out) } }
        shadowOf(activity).receiveResult(started.intent, Activity.RESULT_OK, null)
        awaitText(activity, "the result") { it == "It looks like espresso." }
        assertCoffeeResult(activity)
        screenshot(activity, "5-camera")
    }

    @Test
    fun `pixels decoded by Android classify like the JPEG itself`() {
        val jpeg = File(shared, "images/coffee.jpg").readBytes()
        val bitmap = BitmapFactory.decodeByteArray(jpeg, 0, jpeg.size)
        assertNotNull("Android decodes coffee.jpg", bitmap)
        Classifier.fromPath(System.getProperty("nnzip.model")).use { classifier ->
            val fromPixels = classifier.classifyBitmap(bitmap, 5u)
            val fromJpeg = classifier.classify(jpeg, 5u)
            println("Android's pixels: ${fromPixels.joinToString { Format.prediction(it) }}")
            println("the core's JPEG decoder: ${fromJpeg.joinToString { Format.prediction(it) }}")
            assertEquals(fromJpeg[0].label, fromPixels[0].label)
            // Two JPEG decoders differ in chroma upsampling and rounding; a channel-order or stride
            // mistake in the Bitmap path would change the classes, not just their probabilities.
            val shared = fromPixels.map { it.index }.intersect(fromJpeg.map { it.index }.toSet())
            assertTrue("top-5 overlap ${shared.size}", shared.size >= 3)
            assertEquals(fromJpeg[0].probability.toDouble(), fromPixels[0].probability.toDouble(), 0.15)
        }
    }

    // ---- what a person does and sees -------------------------------------------------------

    private fun open(): ActivityController<MainActivity> = Robolectric.buildActivity(MainActivity::class.java).setup()

    /** Taps "Choose photo" and answers the picker's intent with [name], as the photo picker would. */
    private fun pick(activity: MainActivity, name: String) {
        button(activity, "Choose photo").performClick()
        val request = shadowOf(activity).nextStartedActivityForResult
        assertNotNull("the button opens the photo picker", request)
        assertEquals(MediaStore.ACTION_PICK_IMAGES, request.intent.action)
        assertEquals("image/*", request.intent.type)
        shadowOf(activity).receiveResult(request.intent, Activity.RESULT_OK, Intent().setData(PhotoProvider.uri(name)))
    }

    private fun assertCoffeeResult(activity: MainActivity) {
        val rows = resultRows(activity)
        assertEquals("five result rows: ${texts(activity)}", 5, rows.size)
        val (label, bar) = rows[0]
        val top = Regex("""espresso (\d+\.\d)%""").matchEntire(label.text)
        assertNotNull("first row is espresso with its probability: ${label.text}", top)
        val percent = top!!.groupValues[1].toDouble()
        // The app hands the library pixels that Android decoded (Skia), not the JPEG: espresso stays
        // first but less sure than from the core's own decoder (p > 0.9 in mobile/jvm); the test
        // below compares the two paths.
        assertTrue("espresso at $percent%", percent > 50.0)
        assertEquals("the bar shows the probability", percent / 100, bar.progress / bar.max.toDouble(), 0.002)
        for ((l, _) in rows.drop(1)) assertTrue(l.text.toString(), Regex(""".+ \d+\.\d%""").matches(l.text))
        assertTrue(texts(activity).toString(), texts(activity).any { Regex("""Inference \d+\.\d ms on this phone""").matches(it) })
    }

    // ---- reading the screen ------------------------------------------------------------------

    private fun idle() = shadowOf(Looper.getMainLooper()).idle()

    /** Runs the UI thread until [done] holds; the app's own background thread does the work meanwhile. */
    private fun await(what: String, done: () -> Boolean) {
        val deadline = System.nanoTime() + 60_000_000_000L
        while (System.nanoTime() < deadline) {
            idle()
            if (done()) return
            Thread.sleep(20)
        }
        fail("timed out waiting for $what; the screen shows ${texts(RuntimeEnvironment.getApplication().let { (it as NnzipApp).visible })}")
    }

    private fun awaitText(activity: Activity, what: String, matches: (String) -> Boolean) =
        await(what) { texts(activity).any(matches) }

    private fun views(root: View): List<View> =
        if (root is ViewGroup) listOf(root) + (0 until root.childCount).flatMap { views(root.getChildAt(it)) } else listOf(root)

    private fun content(activity: Activity): View = activity.findViewById(android.R.id.content)

    /** The visible texts in reading order, as a person sees them. */
    private fun texts(activity: Activity?): List<String> =
        if (activity == null) emptyList()
        else views(content(activity)).filter { it is TextView && it.isShown }.map { (it as TextView).text.toString() }

    private fun button(activity: Activity, text: String): Button =
        views(content(activity)).filterIsInstance<Button>().singleOrNull { it.text == text }
            ?: error("no button \"$text\" on screen: ${texts(activity)}")

    /** The visible result rows: a label followed by its confidence bar. */
    private fun resultRows(activity: Activity): List<Pair<TextView, ProgressBar>> =
        views(content(activity)).zipWithNext().mapNotNull { (a, b) ->
            if (a is TextView && b is ProgressBar && a.isShown && b.isShown) a to b else null
        }

    private fun photoShown(activity: Activity): Boolean =
        views(content(activity)).filterIsInstance<android.widget.ImageView>().any { it.drawable != null }

    /**
     * Draws the window (action bar included) as the screen shows it, or with [wholePage] the whole
     * scrollable page, also what is scrolled out of view.
     */
    private fun screenshot(activity: Activity, name: String, wholePage: Boolean = false) {
        idle()
        val root = if (wholePage) views(content(activity)).filterIsInstance<ScrollView>().first().getChildAt(0) else activity.window.decorView
        val bitmap = Bitmap.createBitmap(root.width, root.height, Bitmap.Config.ARGB_8888)
        val canvas = Canvas(bitmap)
        // The page alone has no background: the window's is white.
        if (wholePage) canvas.drawColor(Color.WHITE)
        root.draw(canvas)
        screenshots.mkdirs()
        val file = File(screenshots, "$name.png")
        file.outputStream().use { bitmap.compress(Bitmap.CompressFormat.PNG, 100, it) }
        println("screenshot: $file (${bitmap.width}×${bitmap.height})")
    }
}
