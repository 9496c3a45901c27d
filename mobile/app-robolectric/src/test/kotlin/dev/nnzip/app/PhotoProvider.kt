package dev.nnzip.app

import android.content.ContentProvider
import android.content.ContentValues
import android.database.Cursor
import android.net.Uri
import android.os.ParcelFileDescriptor
import java.io.File
import java.io.FileNotFoundException

/**
 * Stands in for the photo picker's provider: serves the files of one directory as
 * `content://dev.nnzip.test.photos/<name>`, read-only, the way the picker hands the app a photo.
 * The app reads them with `ContentResolver.openInputStream`, as it does on a phone.
 */
class PhotoProvider : ContentProvider() {
    override fun onCreate() = true

    override fun openFile(uri: Uri, mode: String): ParcelFileDescriptor {
        val name = uri.lastPathSegment ?: throw FileNotFoundException("no file name in $uri")
        val file = File(dir ?: throw FileNotFoundException("PhotoProvider.dir is not set"), name)
        if (!file.isFile) throw FileNotFoundException("$file does not exist")
        return ParcelFileDescriptor.open(file, ParcelFileDescriptor.MODE_READ_ONLY)
    }

    override fun getType(uri: Uri): String = when (uri.lastPathSegment?.substringAfterLast('.')) {
        "jpg", "jpeg" -> "image/jpeg"
        "png" -> "image/png"
        else -> "application/octet-stream"
    }

    override fun query(uri: Uri, projection: Array<String>?, selection: String?, args: Array<String>?, sort: String?): Cursor? = null
    override fun insert(uri: Uri, values: ContentValues?): Uri? = null
    override fun delete(uri: Uri, selection: String?, args: Array<String>?) = 0
    override fun update(uri: Uri, values: ContentValues?, selection: String?, args: Array<String>?) = 0

    companion object {
        const val AUTHORITY = "dev.nnzip.test.photos"

        /** The directory served; set by the test before the app opens a URI. */
        @Volatile var dir: File? = null

        fun uri(name: String): Uri = Uri.parse("content://$AUTHORITY/$name")
    }
}
