package dev.nnzip.app

import android.content.ContentProvider
import android.content.ContentUris
import android.content.ContentValues
import android.database.Cursor
import android.net.Uri
import android.os.ParcelFileDescriptor
import android.provider.MediaStore
import java.io.File
import java.io.FileNotFoundException
import java.util.concurrent.atomic.AtomicLong

/**
 * Stands in for MediaStore's provider where the app asks for a new picture: `insert` makes an
 * entry backed by a file in [dir], and `openFile` opens it for the camera app to write and for the
 * app to read, as the real one does with the file in Pictures/nnzip.
 */
class FakeMediaStore : ContentProvider() {
    private val next = AtomicLong(1)

    override fun onCreate() = true

    override fun insert(uri: Uri, values: ContentValues?): Uri {
        val id = next.getAndIncrement()
        val name = values?.getAsString(MediaStore.Images.Media.DISPLAY_NAME) ?: "image-$id.jpg"
        files[id] = File(dir ?: error("FakeMediaStore.dir is not set"), name)
        return ContentUris.withAppendedId(uri, id)
    }

    override fun openFile(uri: Uri, mode: String): ParcelFileDescriptor {
        val file = files[ContentUris.parseId(uri)] ?: throw FileNotFoundException("no entry $uri")
        return ParcelFileDescriptor.open(file, ParcelFileDescriptor.parseMode(mode))
    }

    override fun delete(uri: Uri, selection: String?, args: Array<String>?): Int =
        if (files.remove(ContentUris.parseId(uri))?.delete() == true) 1 else 0

    override fun getType(uri: Uri) = "image/jpeg"
    override fun query(uri: Uri, projection: Array<String>?, selection: String?, args: Array<String>?, sort: String?): Cursor? = null
    override fun update(uri: Uri, values: ContentValues?, selection: String?, args: Array<String>?) = 0

    companion object {
        /** Where the pictures go; set by the test. */
        @Volatile var dir: File? = null
        private val files = java.util.concurrent.ConcurrentHashMap<Long, File>()
    }
}
