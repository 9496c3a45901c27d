package dev.nnzip.app

import java.io.File
import java.io.InputStream

/**
 * The app as the tests run it: everything of [NnzipApp] except where the model comes from.
 * Robolectric reads assets only from a resource APK, which needs aapt2; the model that the APK
 * would bundle is packed by pom.xml into target/models instead.
 */
class TestApp : NnzipApp() {
    override fun openModel(): InputStream {
        val path = System.getProperty("nnzip.model") ?: error("nnzip.model not set: run through Maven")
        return File(path).inputStream()
    }
}
