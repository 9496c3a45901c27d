package dev.nnzip.app

import dev.nnzip.Classifier
import dev.nnzip.NnzipException
import dev.nnzip.Prediction
import dev.nnzip.app.core.Format
import dev.nnzip.app.core.ModelLoader
import dev.nnzip.app.core.SavedResult
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import java.io.DataInputStream
import java.io.File
import java.util.concurrent.Callable
import java.util.concurrent.CountDownLatch
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import java.util.zip.GZIPInputStream

/**
 * The generated Kotlin bindings over the real host library (loaded by JNA from
 * `-Djna.library.path`), with real `.nnz` files that `nnzip pack` builds from `../shared/models`
 * at the start of the run (paths come from mobile/jvm/pom.xml).
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ClassifierTest {
    private fun prop(name: String): File {
        val v = System.getProperty(name) ?: error("system property $name not set: run `mvn -f mobile/pom.xml test`")
        return File(v)
    }

    private fun existing(name: String): File =
        prop(name).also { check(it.exists()) { "$name=$it does not exist" } }

    private val shared by lazy { existing("nnzip.shared") }
    private val images by lazy { File(shared, "images") }
    private val work by lazy { prop("nnzip.work").also { it.mkdirs() } }
    private lateinit var modelFile: File
    private lateinit var lenetFile: File
    private lateinit var effnet: Classifier

    /** Runs `nnzip pack` (the workspace's CLI) and returns the written file. */
    private fun pack(onnx: String, out: String, vararg args: String): File {
        val cli = existing("nnzip.cli")
        val target = File(work, out)
        val cmd = listOf(cli.path, "pack", File(shared, "models/$onnx").path, "-o", target.path) + args
        val p = ProcessBuilder(cmd).redirectErrorStream(true).start()
        val output = p.inputStream.bufferedReader().readText()
        check(p.waitFor() == 0) { "${cmd.joinToString(" ")} failed:\n$output" }
        println("packed ${target.name}: ${Format.bytes(target.length())} (${cmd.drop(1).joinToString(" ")})")
        return target
    }

    @BeforeAll
    fun load() {
        modelFile = pack(
            "efficientnet_lite0.onnx", "efficientnet_lite0.nnz",
            "--preprocess", "efficientnet-lite", "--labels", File(shared, "models/imagenet_labels.txt").path,
        )
        val labels = File(work, "fashion_labels.txt")
        labels.writeText(FASHION.joinToString("\n", postfix = "\n"))
        lenetFile = pack("lenet5.onnx", "lenet5.nnz", "--preprocess", "mnist", "--labels", labels.path)
        val t0 = System.nanoTime()
        effnet = ModelLoader { modelFile.inputStream() }.get()
        println("EfficientNet-Lite0 .nnz (${Format.bytes(modelFile.length())}) loaded in ${Format.millis(System.nanoTime() - t0)}")
    }

    @AfterAll
    fun close() = effnet.close()

    @Test
    fun `coffee is an espresso`() {
        val t0 = System.nanoTime()
        val top = effnet.classify(File(images, "coffee.jpg").readBytes(), 5u)
        println("coffee.jpg in ${Format.millis(System.nanoTime() - t0)}: ${top.joinToString { Format.prediction(it) }}")
        assertEquals(5, top.size)
        assertEquals("espresso", top[0].label)
        assertEquals(967u, top[0].index)
        assertTrue(top[0].probability > 0.9f, "espresso probability ${top[0].probability}")
        assertTrue(Format.prediction(top[0]).matches(Regex("espresso 9\\d\\.\\d%")), Format.prediction(top[0]))
    }

    @Test
    fun `the cat is a cat`() {
        val top = effnet.classify(File(images, "chelsea.jpg").readBytes(), 3u)
        println("chelsea.jpg: ${top.joinToString { Format.prediction(it) }}")
        assertTrue(top[0].index in 281u..285u, "top-1 ${top[0]} is not a cat class")
    }

    @Test
    fun `model card describes the file`() {
        val info = effnet.info()
        val card = Format.modelCard(info)
        println(card)
        assertEquals(modelFile.length().toULong(), info.fileBytes)
        assertEquals(1000, info.labels.size)
        assertEquals(224u, info.inputWidth)
        // The stored weights as float32: the sum over the tensors, about 4.6 M parameters.
        assertEquals(info.tensors.sumOf { it.denseBytes }, info.denseBytes)
        assertTrue(info.denseBytes in 18_000_000uL..19_000_000uL, "dense bytes ${info.denseBytes}")
        assertTrue(card.startsWith("efficientnet_lite0 · 224×224 input · 1000 classes\nOn disk "), card)
    }

    @Test
    fun `pixels from a decoded image give the same answer shape`() {
        // A flat grey 300×200 frame: any answer, but five of them, sorted, summing to at most 1.
        val w = 300
        val h = 200
        val rgba = ByteArray(w * h * 4) { if (it % 4 == 3) -1 else 0x80.toByte() }
        val top = effnet.classifyPixels(w.toUInt(), h.toUInt(), rgba, 5u)
        assertEquals(5, top.size)
        assertTrue(top.zipWithNext().all { (a, b) -> a.probability >= b.probability })
        assertTrue(top.sumOf { it.probability.toDouble() } <= 1.0001)
    }

    @Test
    fun `garbage bytes are a BadFile exception`() {
        val e = assertThrows<NnzipException.BadFile> { Classifier.fromBytes("hello, not a model".toByteArray()) }
        println("garbage: ${e.message}")
        assertTrue(e.message!!.contains("nnzip pack"), e.message)
        assertTrue(ModelLoader.describe(e).startsWith("The model file is damaged"))
    }

    @Test
    fun `a truncated file is a BadFile exception`() {
        val bytes = modelFile.readBytes()
        for (cut in listOf(10, 100, bytes.size / 2, bytes.size - 1)) {
            val e = assertThrows<NnzipException.BadFile> { Classifier.fromBytes(bytes.copyOf(cut)) }
            if (cut == bytes.size / 2) println("truncated: ${e.message}")
        }
    }

    @Test
    fun `a missing file is an Io exception naming the path`() {
        val e = assertThrows<NnzipException.Io> { Classifier.fromPath("/no/such/model.nnz") }
        assertTrue(e.message!!.contains("/no/such/model.nnz"), e.message)
        // fromPath on the real file works too.
        Classifier.fromPath(lenetFile.path).use { assertEquals(10, it.info().labels.size) }
    }

    @Test
    fun `bad images and wrong pixel counts are exceptions`() {
        val e = assertThrows<NnzipException.BadImage> { effnet.classify(ByteArray(64) { it.toByte() }, 5u) }
        println("bad image: ${e.message}")
        val jpeg = File(images, "coffee.jpg").readBytes()
        // Cut inside the headers: an error. (Cut inside the scan data, the JPEG decoder keeps the rows it
        // has and greys out the rest, as image viewers do: that is an answer, not an exception.)
        assertThrows<NnzipException.BadImage> { effnet.classify(jpeg.copyOf(200), 5u) }
        val p = assertThrows<NnzipException.WrongPixelCount> { effnet.classifyPixels(10u, 10u, ByteArray(399), 5u) }
        assertTrue(p.message!!.contains("400 bytes, got 399"), p.message)
        assertThrows<NnzipException.WrongPixelCount> { effnet.classifyPixels(0u, 0u, ByteArray(0), 5u) }
    }

    @Test
    fun `one classifier from 8 threads gives identical results`() {
        val jpeg = File(images, "coffee.jpg").readBytes()
        val expected = effnet.classify(jpeg, 5u)
        val pool = Executors.newFixedThreadPool(8)
        val start = CountDownLatch(1)
        try {
            val futures = (0 until 8).map {
                pool.submit(Callable { start.await(); (0 until 3).map { effnet.classify(jpeg, 5u) } })
            }
            start.countDown()
            for (f in futures) for (r in f.get(5, TimeUnit.MINUTES)) assertEquals(expected, r)
        } finally {
            pool.shutdownNow()
        }
    }

    @Test
    fun `LeNet-5 classifies Fashion-MNIST test samples`() {
        val dir = existing("nnzip.fashionMnist")
        val imgs = DataInputStream(GZIPInputStream(File(dir, "t10k-images-idx3-ubyte.gz").inputStream().buffered()))
        val lbls = DataInputStream(GZIPInputStream(File(dir, "t10k-labels-idx1-ubyte.gz").inputStream().buffered()))
        check(imgs.readInt() == 0x803 && lbls.readInt() == 0x801) { "not IDX files" }
        imgs.readInt(); imgs.readInt(); imgs.readInt()
        lbls.readInt()
        val n = 200
        var correct = 0
        var first = -1
        var firstTop = ""
        Classifier.fromBytes(lenetFile.readBytes()).use { lenet ->
            repeat(n) {
                val gray = ByteArray(28 * 28).also { imgs.readFully(it) }
                val label = lbls.readUnsignedByte()
                val rgba = ByteArray(28 * 28 * 4)
                for (i in gray.indices) {
                    rgba[4 * i] = gray[i]; rgba[4 * i + 1] = gray[i]; rgba[4 * i + 2] = gray[i]; rgba[4 * i + 3] = -1
                }
                val top = lenet.classifyPixels(28u, 28u, rgba, 1u)[0]
                if (it == 0) { first = label; firstTop = top.label }
                if (top.index.toInt() == label) correct++
            }
        }
        println("LeNet-5 on the first $n Fashion-MNIST test images: $correct/$n correct; image 0 (${FASHION[first]}) → $firstTop")
        assertEquals("Ankle boot", firstTop)
        // The model scores 91.8% on the whole test set.
        assertTrue(correct >= n * 85 / 100, "$correct/$n")
    }

    @Test
    fun `saved result survives a round trip`() {
        val preds = listOf(Prediction(967u, "espresso", 0.951f), Prediction(504u, "coffee mug", 0.02f))
        val saved = SavedResult.of(preds, 12_300_000)
        val back = SavedResult.restore(saved.labels.toTypedArray(), saved.indices.toIntArray(), saved.probabilities.toFloatArray(), saved.inferenceNanos)
        assertEquals(preds, back!!.predictions())
        assertEquals("12.3 ms", Format.millis(back.inferenceNanos))
        assertNull(SavedResult.restore(arrayOf("a"), intArrayOf(), floatArrayOf(), 0))
    }

    @Test
    fun `formatting`() {
        assertEquals("espresso 95.1%", Format.prediction(Prediction(967u, "espresso", 0.951f)))
        assertEquals("0.0%", Format.percent(Float.NaN))
        assertEquals(951, Format.bar(0.951f))
        assertEquals("18.6 MB", Format.bytes(18_608_032))
        assertEquals("812 B", Format.bytes(812))
        assertEquals("39.1×", Format.ratio(39.1))
        assertEquals(
            listOf(
                "accuracy: top-1 89.1%",
                "same top class as the uncompressed model: 64.7% on holdout photos",
                "source: tests",
            ),
            Format.extraLines(
                mapOf(
                    "source" to "tests",
                    "agreement_top1" to "0.6466",
                    "agreement_measured_on" to "holdout photos",
                    "accuracy" to "0.8914",
                ),
            ),
        )
        assertEquals(listOf("accuracy: n/a"), Format.extraLines(mapOf("accuracy" to "n/a")))
    }

    private companion object {
        val FASHION = listOf("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    }
}
