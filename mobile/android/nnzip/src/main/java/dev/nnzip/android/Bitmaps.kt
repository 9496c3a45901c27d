package dev.nnzip.android

import android.graphics.Bitmap
import dev.nnzip.Classifier
import dev.nnzip.Prediction
import java.nio.ByteBuffer

/**
 * Classifies an Android [Bitmap] of any size and config: the model's own preprocessing resizes it.
 * Call it off the UI thread, like every [Classifier] call.
 *
 * An `ARGB_8888` bitmap stores each pixel as the bytes R, G, B, A, which is exactly the layout
 * [Classifier.classifyPixels] reads, so its pixels are handed over as they are; any other config
 * (`RGB_565`, `HARDWARE`, …) is copied to `ARGB_8888` first.
 *
 * @throws IllegalArgumentException if Android cannot copy the bitmap to `ARGB_8888`.
 * @throws dev.nnzip.NnzipException as [Classifier.classifyPixels] does.
 */
fun Classifier.classifyBitmap(bitmap: Bitmap, topK: UInt = 5u): List<Prediction> {
    val argb = if (bitmap.config == Bitmap.Config.ARGB_8888) {
        bitmap
    } else {
        requireNotNull(bitmap.copy(Bitmap.Config.ARGB_8888, false)) {
            "this ${bitmap.config} bitmap cannot be copied to ARGB_8888: decode the photo with inPreferredConfig = ARGB_8888"
        }
    }
    val pixels = ByteBuffer.allocate(argb.byteCount)
    argb.copyPixelsToBuffer(pixels)
    return classifyPixels(argb.width.toUInt(), argb.height.toUInt(), pixels.array(), topK)
}
